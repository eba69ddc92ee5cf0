// SMTP reply builder: appends "CODE ENH text\r\n" (or a multi-line reply) to an output
// buffer, so that replies to a pipelined group can be sent with a single write.
//
// Every reply carries an RFC 2034 enhanced status code, except the greeting and the
// HELO/EHLO reply, which RFC 2034 §3 exempts. Text is sanitised: a CR or LF inside it
// could otherwise forge an extra reply line.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace postern {

void appendReply(std::string& out, int code, std::string_view enhanced, std::string_view text);

// Multi-line reply without enhanced codes (EHLO): "250-first", ..., "250 last".
void appendMultiline(std::string& out, int code, std::span<const std::string_view> lines);

// Multi-line reply with an enhanced code on every line (HELP).
void appendMultiline(std::string& out, int code, std::string_view enhanced,
                     std::span<const std::string_view> lines);

}  // namespace postern

namespace postern {

// How a reply code from a peer is treated (RFC 5321 §4.2.1): by its first digit.
enum class ReplyClass { kSuccess, kIntermediate, kTransient, kPermanent, kInvalid };

ReplyClass classifyReply(int code);

}  // namespace postern
