// One place for error reporting: every failure the user can fix is a BadInput
// (exit status 2), everything else is Internal (exit status 1).
#pragma once

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

// Thrown when a run is cancelled by a progress callback.
[[noreturn]] inline void cancelled(const std::string& message) {
  throw Error(Status::Cancelled, message);
}

}  // namespace scorch
