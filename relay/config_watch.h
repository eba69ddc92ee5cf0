// ConfigWatch: reload when the configuration file changes (`[server] reload_on_change`),
// for a Kubernetes ConfigMap or configuration management that does not send SIGHUP.
//
// The file is stat()ed every `interval` on libuv's thread pool (uv_fs_poll), following
// symlinks, so a ConfigMap's atomic swap of its ..data link is seen. A change is acted on
// only once the file has stayed the same through the next stat (two intervals): an editor
// that rewrites it in place could otherwise be caught with half a file, which may be a
// valid configuration with defaults for the rest. Written elsewhere and renamed over, it
// is never seen half-written. Then changed() runs on the loop (Server::reload, as for
// SIGHUP); a file that does not load is refused there as a whole, like any reload.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

namespace postern {

class ConfigWatch {
 public:
  explicit ConfigWatch(uv_loop_t* loop) : loop_(loop) {}
  ConfigWatch(const ConfigWatch&) = delete;
  ConfigWatch& operator=(const ConfigWatch&) = delete;

  // Starts watching path; fails only if libuv cannot.
  int start(const std::string& path, double interval_seconds, std::function<void()> changed);
  // Stops and closes the handles (before the loop ends).
  void close();

 private:
  static void onPoll(uv_fs_poll_t* h, int status, const uv_stat_t* prev, const uv_stat_t* curr);
  static void onSettled(uv_timer_t* t);

  uv_loop_t* loop_;
  uv_fs_poll_t poll_;
  uv_timer_t settle_;
  uint64_t interval_ms_ = 2000;
  std::function<void()> changed_;
  std::string path_;
  bool open_ = false;
};

}  // namespace postern
