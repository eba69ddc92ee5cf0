#include "core/stream_write.h"

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

int writeOut(uv_stream_t* stream, std::string& out, WriteDone done, void* ctx) {
  if (out.empty()) return 1;
  uv_buf_t buf = uv_buf_init(out.data(), static_cast<unsigned>(out.size()));
  int n = uv_try_write(stream, &buf, 1);
  if (n == static_cast<int>(out.size())) {
    out.clear();
    return 1;
  }
  if (n < 0 && n != UV_EAGAIN) {
    out.clear();
    return n;
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
    return r;
  }
  return 0;
}

}  // namespace postern
