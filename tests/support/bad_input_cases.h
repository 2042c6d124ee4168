// The bad-input cases of tests/test_bad_input.cpp (the CLI), shared with
// tests/test_server.cpp, which sends the `generate` ones to the server and expects the
// CLI's message.
#pragma once

#include <string>
#include <vector>

namespace scorch_test {

struct Case {
  std::string id;        // the test's name
  std::string args;      // after `scorch`, shell words, run in the suite's folder
  std::string fragment;  // what the error line must contain (the key or the file)
  std::string env = "";  // VAR=value words before the command
};

// Run in a folder holding the suite's files (test_bad_input.cpp makes them) and links to
// the repository's configs/ and models/.
std::vector<Case> bad_input_cases();

}  // namespace scorch_test
