#include "queue/queue_entry.h"

namespace postern {

QueueEntry entryFromSpool(const SpooledMessage& m) {
  QueueEntry e;
  e.id = queueIdString(m.envelope.id);
  e.sender = m.envelope.sender;
  for (size_t i = 0; i < m.envelope.recipients.size(); ++i) {
    if (i >= m.done.size() || !m.done[i]) e.recipients.push_back(m.envelope.recipients[i]);
  }
  e.received_ms = m.envelope.received_ms;
  e.size = m.ref.body_size;
  e.state = "spooled";
  return e;
}

}  // namespace postern
