#include "relay/config_watch.h"

#include <cmath>

#include "core/log.h"

namespace postern {

int ConfigWatch::start(const std::string& path, double interval_seconds,
                       std::function<void()> changed) {
  path_ = path;
  changed_ = std::move(changed);
  interval_ms_ = static_cast<uint64_t>(std::llround(interval_seconds * 1000));
  uv_fs_poll_init(loop_, &poll_);
  poll_.data = this;
  uv_timer_init(loop_, &settle_);
  settle_.data = this;
  open_ = true;
  return uv_fs_poll_start(&poll_, onPoll, path_.c_str(), static_cast<unsigned>(interval_ms_));
}

void ConfigWatch::close() {
  if (!open_) return;
  open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&poll_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&settle_), nullptr);
}

void ConfigWatch::onPoll(uv_fs_poll_t* h, int status, const uv_stat_t*, const uv_stat_t*) {
  auto* self = static_cast<ConfigWatch*>(h->data);
  if (status < 0) {
    // Gone or unreadable: nothing to load; it is seen again when it is back.
    uv_timer_stop(&self->settle_);
    logEvent(spdlog::level::warn, "config_unreadable",
             {{"config", self->path_}, {"error", uv_strerror(status)}});
    return;
  }
  // Changed: wait until it has stayed so through one more stat (two intervals, so that a
  // poll falls inside the wait; a change it sees restarts the wait).
  uv_timer_start(&self->settle_, onSettled, 2 * self->interval_ms_, 0);
}

void ConfigWatch::onSettled(uv_timer_t* t) {
  auto* self = static_cast<ConfigWatch*>(t->data);
  logEvent(spdlog::level::info, "config_changed", {{"config", self->path_}});
  self->changed_();
}

}  // namespace postern
