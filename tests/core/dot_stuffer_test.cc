#include "core/dot_stuffer.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace postern {
namespace {

// The reference: the whole-body stuffing SmtpClient did before bodies were streamed.
std::string stuffWhole(std::string_view body) {
  std::string out;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t lf = body.find('\n', pos);
    size_t end = lf == std::string_view::npos ? body.size() : lf + 1;
    if (body[pos] == '.') out.push_back('.');
    out.append(body.substr(pos, end - pos));
    pos = end;
  }
  if (!out.empty() && out.back() != '\n') out.append("\r\n");
  out.append(".\r\n");
  return out;
}

std::string stuffInPieces(std::string_view body, size_t piece, size_t* views = nullptr) {
  DotStuffer s;
  std::vector<std::string_view> out;
  for (size_t pos = 0; pos < body.size(); pos += piece) s.stuff(body.substr(pos, piece), out);
  s.finish(out);
  if (views != nullptr) *views = out.size();
  std::string joined;
  for (auto v : out) joined += v;
  return joined;
}

TEST(DotStuffer, DoublesLeadingDotsOnly) {
  EXPECT_EQ(stuffInPieces(".a\r\nb.c\r\n..\r\n.\r\n", 1 << 20),
            "..a\r\nb.c\r\n...\r\n..\r\n.\r\n");
}

TEST(DotStuffer, EmptyBodyIsTheEndMarkerAlone) { EXPECT_EQ(stuffInPieces("", 16), ".\r\n"); }

TEST(DotStuffer, BodyWithoutFinalLineEndGetsOne) {
  EXPECT_EQ(stuffInPieces("abc", 16), "abc\r\n.\r\n");
  EXPECT_EQ(stuffInPieces(".", 16), "..\r\n.\r\n");
}

TEST(DotStuffer, ViewsPointIntoThePiece) {
  // No dots to stuff: one view for the piece and one for the end marker, nothing copied.
  size_t views = 0;
  EXPECT_EQ(stuffInPieces("one\r\ntwo\r\n", 1 << 20, &views), "one\r\ntwo\r\n.\r\n");
  EXPECT_EQ(views, 2u);
}

TEST(DotStuffer, EveryPieceSizeGivesTheWholeBodyResult) {
  // Lines split at every place a piece can end: inside CRLF, right before a dot, right
  // after an LF, a piece of one octet.
  const std::string body =
      ".start\r\nplain line\r\n..two dots\r\n.\r\nx.\r\n\r\n.\r\n. \r\nend.\r\n.last";
  const std::string want = stuffWhole(body);
  for (size_t piece = 1; piece <= body.size() + 1; ++piece) {
    EXPECT_EQ(stuffInPieces(body, piece), want) << "piece " << piece;
  }
}

TEST(DotStuffer, RandomBodiesInRandomPiecesMatchTheReference) {
  // Bodies of dots, line ends and letters, so dots fall at line starts, mid-line and at
  // piece edges in every combination.
  std::mt19937 rng(7);
  constexpr std::string_view kAlphabet = "..\r\n\nab";
  for (int round = 0; round < 2000; ++round) {
    std::string body(rng() % 64, '\0');
    for (char& c : body) c = kAlphabet[rng() % kAlphabet.size()];
    const size_t piece = 1 + rng() % 8;
    EXPECT_EQ(stuffInPieces(body, piece), stuffWhole(body)) << "body " << body << " piece " << piece;
  }
}

}  // namespace
}  // namespace postern
