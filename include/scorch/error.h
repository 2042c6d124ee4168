// One place for error reporting: every failure the user can fix is a BadInput
// (exit status 2), everything else is Internal (exit status 1).
#pragma once

#include <new>
#include <stdexcept>
#include <string>

namespace scorch {

enum class Status : int {
  Ok = 0,
  Internal = 1,
  BadInput = 2,
  Cancelled = 3,
};

class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

// Thrown for anything the user controls: config, option, model file, data file.
[[noreturn]] inline void bad_input(const std::string& message) {
  throw Error(Status::BadInput, message);
}

// An allocation that failed (std::bad_alloc, LibTorch's "can't allocate memory" or "out
// of memory"): under bad input (a batch or model too large for this machine) it is bad
// input too, said as such by the CLI (exit 2) and the C API (SCORCH_BAD_INPUT).
inline bool is_allocation_failure(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return true;
  const std::string m = e.what();
  return m.find("can't allocate memory") != std::string::npos || m.find("out of memory") != std::string::npos;
}

// The message for it: the allocator's first line and what to lower.
inline std::string allocation_failure_message(const std::exception& e) {
  const std::string m = e.what();
  return "out of memory (" + m.substr(0, m.find('\n')) + "); lower batch, or model.max_batch to evaluate in chunks";
}

// Thrown when a run is cancelled by a progress callback.
[[noreturn]] inline void cancelled(const std::string& message) {
  throw Error(Status::Cancelled, message);
}

}  // namespace scorch
