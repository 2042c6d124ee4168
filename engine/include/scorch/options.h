// Typed, validated options: a schema (name, type, default, help) checked
// against the user's values, so an unknown or malformed option is one clear
// error listing what is valid.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace scorch {

// Section: a nested mapping (e.g. teleport's `inner`), passed on as "name.key" entries.
// Yaml: a nested structure (e.g. msg's list of `terms`), passed on as YAML text.
enum class OptionType { Int, Number, Bool, String, IntList, Section, Yaml };

struct OptionSpec {
  std::string name;
  OptionType type;
  std::string default_value;
  std::string help;
  std::vector<std::string> choices;  // String options only; empty: any value
};

class Options {
 public:
  // raw: option name -> scalar text. `prefix` names the config section in
  // errors ("sampler"). Unknown names, bad values and choices are bad-input Errors.
  static Options parse(const std::string& prefix, const std::vector<OptionSpec>& specs,
                       const std::map<std::string, std::string>& raw);

  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool flag(const std::string& name) const;
  const std::string& str(const std::string& name) const;
  std::vector<int64_t> int_list(const std::string& name) const;  // "[1, 2]" or "1, 2"
  std::map<std::string, std::string> section(const std::string& name) const;  // keys without "name."

 private:
  const std::string& raw(const std::string& name) const;
  std::map<std::string, std::string> values_;
};

std::string to_string(OptionType type);

}  // namespace scorch
