// Result<T> and Status: the one way a call that can fail says "failed, and why". Before
// it, failures came back as an error string ("" for success), a nullptr with a string
// out-parameter, a bool with an out-parameter, or an int; each caller had to know which.
// A Result holds the value or the reason (words for a log line or a reply), and is
// [[nodiscard]]: ignoring one is a warning, so a build error here.
//
// What stays as it is: std::optional for "absent, not an error" (a parser that does not
// recognise its input, a lookup that finds nothing); a bool where the caller needs no
// reason (a check, a write whose errno is the reason); process exit codes; and
// ConfigError, thrown while loading the configuration, as at start-up nothing runs yet.
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
  const T& value() const& {
    POSTERN_ASSERT(ok());
    return std::get<0>(v_);
  }
  T& value() & { return const_cast<T&>(std::as_const(*this).value()); }
  T&& value() && { return std::move(value()); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  T&& operator*() && { return std::move(value()); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }
  // For a caller to whom a failure means "nothing": the value, or fallback.
  T value_or(T fallback) const& { return ok() ? std::get<0>(v_) : std::move(fallback); }

 private:
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
