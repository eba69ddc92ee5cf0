// Result<T> and Status: the one way a call that can fail says "failed, and why". Before
// it, failures came back as an error string ("" for success), a nullptr with a string
// out-parameter, a bool with an out-parameter, or an int; each caller had to know which.
// A Result holds either the value or the reason (words for a log line or a reply), and
// [[nodiscard]] makes ignoring a failure a compile error.
//
// Not everything returns one. std::optional stays for "absent, not an error" (a parser
// that does not recognise its input, a lookup that finds nothing); a bool stays where
// the caller needs no reason (a check, or a write whose errno is the reason); process
// exit codes stay ints.
//
//   Result<std::unique_ptr<SpillFile>> r = SpillFile::create(dir);
//   if (!r) return fail("spill: " + r.error());
//   use(std::move(*r));
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "core/assert.h"

namespace postern {

// Why a call failed; converts to any Result<T>.
struct Error {
  std::string message;
};
inline Error fail(std::string why) { return Error{std::move(why)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error e) : v_(std::in_place_index<1>, std::move(e.message)) {}  // NOLINT: implicit

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  // The reason; only for a failed Result.
  const std::string& error() const {
    POSTERN_ASSERT(!ok());
    return std::get<1>(v_);
  }
  // The value; only for a successful Result.
  T& value() & { return checked(); }
  const T& value() const& { return const_cast<Result*>(this)->checked(); }
  T&& value() && { return std::move(checked()); }
  T& operator*() & { return checked(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(checked()); }
  T* operator->() { return &checked(); }
  const T* operator->() const { return &value(); }
  // For a caller to whom a failure means "nothing": the value, or fallback.
  T value_or(T fallback) const& { return ok() ? std::get<0>(v_) : std::move(fallback); }

 private:
  T& checked() {
    POSTERN_ASSERT(ok());
    return std::get<0>(v_);
  }
  std::variant<T, std::string> v_;  // by index: T may itself be a std::string
};

// Success with no value, or the reason for a failure.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;                                               // success
  Result(Error e) : failed_(true), error_(std::move(e.message)) {}  // NOLINT: implicit

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const std::string& error() const {
    POSTERN_ASSERT(failed_);
    return error_;
  }

 private:
  bool failed_ = false;
  std::string error_;
};
using Status = Result<void>;

}  // namespace postern
