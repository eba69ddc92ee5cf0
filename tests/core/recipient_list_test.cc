#include "core/recipient_list.h"

#include <gtest/gtest.h>

#include "core/config.h"

namespace postern {
namespace {

TEST(RecipientList, AddressesAndCatchAlls) {
  auto list = RecipientList::parse(
      "# comment\n\n  Known@Example.COM.  \r\n@catchall.example\nb\xc3\xbc@B\xc3\x9c"
      "CHER.example\n",
      "test");
  EXPECT_EQ(list->size(), 3u);
  EXPECT_TRUE(list->contains("known@example.com"));
  EXPECT_TRUE(list->contains("KNOWN@example.com"));
  EXPECT_FALSE(list->contains("other@example.com"));
  EXPECT_TRUE(list->contains("anyone@catchall.example"));
  EXPECT_FALSE(list->contains("anyone@sub.catchall.example"));
  EXPECT_FALSE(list->contains("postmaster"));
}

TEST(RecipientList, BadEntriesNameTheLine) {
  for (const char* text : {"ok@example.com\nno-domain\n", "a@b.example\nx@\n",
                           "a@b.example\nx y@example.com\n", "a@b.example\nx@a..b\n"}) {
    try {
      RecipientList::parse(text, "list.txt");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("list.txt:2: ", 0), 0u) << e.what();
    }
  }
  EXPECT_THROW(RecipientList::load("/nonexistent/list"), ConfigError);
}

}  // namespace
}  // namespace postern
