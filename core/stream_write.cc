#include "core/stream_write.h"

#include <vector>

namespace postern {
namespace {

struct WriteReq {
  uv_write_t req;
  std::string data;
  WriteDone done;
  void* ctx;
};

void onWrite(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  if (w->done != nullptr) w->done(w->ctx, status);
  delete w;
}

}  // namespace

Result<Sent> writeOut(uv_stream_t* stream, std::string& out, WriteDone done, void* ctx) {
  if (out.empty()) return Sent::kAll;
  uv_buf_t buf = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
  int n = uv_try_write(stream, &buf, 1);
  if (n == static_cast<int>(out.size())) {
    out.clear();
    return Sent::kAll;
  }
  if (n < 0 && n != UV_EAGAIN) {
    out.clear();
    return fail(uv_strerror(n));
  }
  auto* w = new WriteReq{{}, {}, done, ctx};
  w->req.data = w;
  if (n > 0) {
    w->data.assign(out, static_cast<size_t>(n));
    out.clear();
  } else {
    w->data.swap(out);  // the whole buffer moves; out keeps no storage
  }
  buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int r = uv_write(&w->req, stream, &buf, 1, onWrite);
  if (r < 0) {
    delete w;
    return fail(uv_strerror(r));
  }
  return Sent::kQueued;
}

Result<Sent> writeViews(uv_stream_t* stream, std::span<const std::string_view> views, WriteDone done,
               void* ctx) {
  std::vector<uv_buf_t> bufs;
  bufs.reserve(views.size());
  size_t total = 0;
  for (std::string_view v : views) {
    if (v.empty()) continue;
    bufs.push_back(uv_buf_init(const_cast<char*>(v.data()), static_cast<unsigned>(v.size())));
    total += v.size();
  }
  if (total == 0) return Sent::kAll;
  int n = uv_try_write(stream, bufs.data(), static_cast<unsigned>(bufs.size()));
  if (n == static_cast<int>(total)) return Sent::kAll;
  if (n < 0 && n != UV_EAGAIN) return fail(uv_strerror(n));
  // Skip what the kernel took; libuv copies the uv_buf_t array, not the bytes.
  size_t taken = n > 0 ? static_cast<size_t>(n) : 0;
  size_t first = 0;
  while (taken >= bufs[first].len) taken -= bufs[first++].len;
  bufs[first].base += taken;
  bufs[first].len -= static_cast<unsigned>(taken);
  auto* w = new WriteReq{{}, {}, done, ctx};  // its data stays empty: the views are the caller's
  w->req.data = w;
  int r = uv_write(&w->req, stream, bufs.data() + first,
                   static_cast<unsigned>(bufs.size() - first), onWrite);
  if (r < 0) {
    delete w;
    return fail(uv_strerror(r));
  }
  return Sent::kQueued;
}

}  // namespace postern
