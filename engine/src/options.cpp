#include "scorch/options.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "scorch/error.h"

namespace scorch {

std::string to_string(OptionType type) {
  switch (type) {
    case OptionType::Int: return "int";
    case OptionType::Number: return "number";
    case OptionType::Bool: return "bool";
    case OptionType::String: return "string";
    case OptionType::IntList: return "[int]";
    case OptionType::Section: return "mapping";
    case OptionType::Yaml: return "yaml";
  }
  return "?";
}

namespace {

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

bool parse_number(const std::string& text, double* out) {
  std::string s = text;
  // YAML spells infinity .inf
  if (s == ".inf" || s == "+.inf" || s == ".Inf") s = "inf";
  if (s == "-.inf" || s == "-.Inf") s = "-inf";
  if (s.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (*end || std::isnan(v)) return false;
  *out = v;
  return true;
}

bool parse_int_list(const std::string& text, std::vector<int64_t>* out) {
  std::string s = text;
  for (char& c : s)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(s);
  std::string item;
  out->clear();
  while (in >> item) {
    int64_t v;
    if (!parse_int(item, &v)) return false;
    out->push_back(v);
  }
  return true;
}

bool parse_bool(const std::string& s, bool* out) {
  if (s == "true" || s == "True" || s == "1" || s == "yes") return *out = true, true;
  if (s == "false" || s == "False" || s == "0" || s == "no") return *out = false, true;
  return false;
}

std::string key_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

}  // namespace

Options Options::parse(const std::string& prefix, const std::vector<OptionSpec>& specs,
                       const std::map<std::string, std::string>& raw) {
  Options o;
  for (const auto& spec : specs) o.values_[spec.name] = spec.default_value;
  for (const auto& [name, value] : raw) {
    const OptionSpec* spec = nullptr;
    const size_t dot = name.find('.');
    for (const auto& s : specs)
      if (s.name == name || (dot != std::string::npos && s.type == OptionType::Section && s.name == name.substr(0, dot)))
        spec = &s;
    if (spec && spec->type == OptionType::Section) {
      if (dot == std::string::npos) bad_input(key_name(prefix, name) + ": expected a mapping of options");
      o.values_[name] = value;
      continue;
    }
    if (!spec) {
      std::string valid;
      for (const auto& s : specs) valid += (valid.empty() ? "" : ", ") + s.name;
      bad_input(key_name(prefix, name) + ": unknown option; valid options are: " + valid);
    }
    const std::string key = key_name(prefix, name);
    int64_t i;
    double d;
    bool b;
    switch (spec->type) {
      case OptionType::Int:
        if (!parse_int(value, &i)) bad_input(key + ": expected an integer, got '" + value + "'");
        break;
      case OptionType::Number:
        if (!parse_number(value, &d)) bad_input(key + ": expected a number, got '" + value + "'");
        break;
      case OptionType::Bool:
        if (!parse_bool(value, &b)) bad_input(key + ": expected true or false, got '" + value + "'");
        break;
      case OptionType::Section:
      case OptionType::Yaml:
        break;
      case OptionType::IntList: {
        std::vector<int64_t> list;
        if (!parse_int_list(value, &list)) bad_input(key + ": expected a list of integers, got '" + value + "'");
        break;
      }
      case OptionType::String:
        if (!spec->choices.empty()) {
          bool ok = false;
          std::string valid;
          for (const auto& c : spec->choices) {
            ok = ok || c == value;
            valid += (valid.empty() ? "" : " | ") + c;
          }
          if (!ok) bad_input(key + ": expected " + valid + ", got '" + value + "'");
        }
        break;
    }
    o.values_[name] = value;
  }
  return o;
}

const std::string& Options::raw(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) throw Error(Status::Internal, "option '" + name + "' is not in the schema");
  return it->second;
}

int64_t Options::integer(const std::string& name) const {
  int64_t v = 0;
  if (!parse_int(raw(name), &v)) throw Error(Status::Internal, "option '" + name + "' default is not an integer");
  return v;
}

double Options::number(const std::string& name) const {
  double v = 0;
  if (!parse_number(raw(name), &v)) throw Error(Status::Internal, "option '" + name + "' default is not a number");
  return v;
}

bool Options::flag(const std::string& name) const {
  bool v = false;
  if (!parse_bool(raw(name), &v)) throw Error(Status::Internal, "option '" + name + "' default is not a bool");
  return v;
}

const std::string& Options::str(const std::string& name) const { return raw(name); }

std::map<std::string, std::string> Options::section(const std::string& name) const {
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : values_)
    if (key.size() > name.size() + 1 && key.compare(0, name.size() + 1, name + ".") == 0)
      out[key.substr(name.size() + 1)] = value;
  return out;
}

std::vector<int64_t> Options::int_list(const std::string& name) const {
  std::vector<int64_t> v;
  if (!parse_int_list(raw(name), &v)) throw Error(Status::Internal, "option '" + name + "' is not an integer list");
  return v;
}

}  // namespace scorch
