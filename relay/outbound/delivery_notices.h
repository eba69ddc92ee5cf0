// DeliveryNotices: Delivery's notices to a message's sender (RFC 3464): "failed" (a
// bounce, with the Done records of the recipients it reports), "delayed" past
// delivery.delay_warning, and "relayed" for NOTIFY=SUCCESS recipients handed to a hop
// without DSN. Each notice is composed from the spooled original (queue/bounce.h),
// spooled from <> and then handed back to Delivery, through `queue`, to be delivered like
// any message. It knows the spool and the configuration, nothing of next hops or
// connections.
//
// Failure: an original whose body cannot be read, or a notice the spool cannot write, is
// logged (bounce_failed); a bounce then leaves its recipients without Done records, so the
// next start retries them. A crash can send a notice twice, never lose a bounce.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "queue/bounce.h"
#include "queue/scheduler.h"
#include "queue/spool.h"

namespace postern {

struct RecipientResult;

class DeliveryNotices {
 public:
  // queue: takes each notice once it is spooled, for delivery.
  DeliveryNotices(Spool& spool, std::shared_ptr<const Config> config,
                  std::function<void(SpooledMessage)> queue);

  // A reload's configuration: hostname, bounce_size_limit, queue_lifetime, delay_warning.
  void reload(std::shared_ptr<const Config> config) { config_ = std::move(config); }
  // Delivery stops: a notice being written is neither queued nor followed by the rest of
  // its parts (recovery at the next start takes them up).
  void stop() { stopping_ = true; }

  // The failed recipients of job: a notice for those whose NOTIFY asks for one, and the
  // Done records of all of them in the same write, after it. job_finished: nothing of the
  // job is left to deliver, so the message is released once that write is durable.
  void bounce(DeliveryJob& job, std::vector<FailedRecipient> failed, bool job_finished);
  // NOTIFY=SUCCESS recipients delivered to a hop without DSN: a "relayed" notice.
  void notifySuccess(const DeliveryJob& job, const std::vector<RecipientResult>& results,
                     const std::string& relay);
  // Once per job, past delivery.delay_warning: a "delayed" notice (NOTIFY=DELAY or none).
  void warnDelayed(DeliveryJob& job);

 private:
  // The notices about job's message for rcpts (several if one would pass
  // bounce_size_limit); nullopt if its body cannot be read.
  std::optional<std::vector<std::string>> composeNotice(const DeliveryJob& job,
                                                        std::vector<FailedRecipient> rcpts,
                                                        DsnAction action);
  // Spools notices to original's sender (from <>), one after the other, the last with
  // trailer records in the same write, queues each for delivery, then after(ok): a crash
  // can send one again, never lose one.
  void spoolNotice(const Envelope& original, std::vector<std::string> notices, const char* kind,
                   std::string trailer, std::function<void(bool)> after);

  Spool& spool_;
  std::shared_ptr<const Config> config_;
  std::function<void(SpooledMessage)> queue_;
  bool stopping_ = false;
};

}  // namespace postern
