// Writing a connection's batched output with as few copies as possible (used by server
// sessions, the delivery client and postern-load).
//
// writeOut tries the socket first (uv_try_write); most SMTP replies and commands fit in
// the socket buffer, so no request and no copy is needed. Whatever the socket did not take
// is moved into a heap request that keeps the bytes pinned until libuv's write callback,
// as libuv requires. Writes on one stream complete in order.
#pragma once

#include <uv.h>

#include <span>
#include <string>
#include <string_view>

#include "core/result.h"

namespace postern {

// Called once a queued write finished (status 0) or failed/was cancelled (status < 0).
using WriteDone = void (*)(void* ctx, int status);

// What a write did: every byte went to the kernel at once (done is not called), or the
// rest was queued (done, when not null, is called later). A failure (the stream refused
// the write; done is not called) says why in libuv's words.
enum class Sent { kAll, kQueued };

// Sends out and clears it.
Result<Sent> writeOut(uv_stream_t* stream, std::string& out, WriteDone done, void* ctx);

// Sends views, in order, without copying them (writev): for data that already lies in
// buffers of its own, such as a message body's pieces. The caller keeps every view's
// memory until done is called. Returns as writeOut does.
Result<Sent> writeViews(uv_stream_t* stream, std::span<const std::string_view> views, WriteDone done,
               void* ctx);

}  // namespace postern
