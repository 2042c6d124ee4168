// The one typed config reader. Every config section, sampler and wrapper declares its
// keys once, as a Schema (name, type, default, one-line help, allowed values); read()
// checks a YAML mapping against it and converts every value once. An unknown key is a
// bad-input Error naming the nearest valid key; a malformed value names the key and what
// was expected. The same schemas print `scorch config` and `scorch samplers`.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace scorch {

// Int, Number, Bool, String: a scalar. IntList, NumberList: a sequence of scalars (or one
// scalar "1, 2"). Section: a nested mapping, kept as a YAML node for its own reader (a
// wrapper's `inner`). Yaml: any YAML value, kept as a node (msg's list of `terms`, `cond`).
enum class OptionType { Int, Number, Bool, String, IntList, NumberList, Section, Yaml };

struct OptionSpec {
  std::string name;
  OptionType type;
  std::string default_value;  // YAML text; "" for String means "not set"
  std::string help;
  std::vector<std::string> choices;  // String options only; empty: any value
  // Int and Number options: the accepted range (said in errors and in `scorch config`).
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
};
using Schema = std::vector<OptionSpec>;

class Options {
 public:
  Options() = default;
  // Reads the mapping `node` (absent or null: every default) against `schema`. `path`
  // names the section in errors ("sampler", "guidance.corrector"); keys in `ignore`
  // belong to another reader and are skipped.
  static Options read(const YAML::Node& node, const Schema& schema, const std::string& path,
                      const std::set<std::string>& ignore = {});
  // The same from key -> YAML text (the C++ API and tests): yaml_mapping(raw).
  static Options parse(const std::string& path, const Schema& schema, const std::map<std::string, std::string>& raw);

  int64_t integer(const std::string& name) const;
  double number(const std::string& name) const;
  bool flag(const std::string& name) const;
  const std::string& str(const std::string& name) const;
  const std::vector<int64_t>& int_list(const std::string& name) const;
  const std::vector<double>& number_list(const std::string& name) const;
  // Section and Yaml options: the node as written (the default's node when not given).
  const YAML::Node& node(const std::string& name) const;
  // Whether the user gave the key (rather than the schema's default).
  bool given(const std::string& name) const;
  // The value as text, for messages ("eta = 0.5").
  const std::string& text(const std::string& name) const;
  // Every key with its value, given or default, as a YAML mapping (keys in `skip` left out):
  // the resolved section a provenance record stores.
  YAML::Node to_yaml(const std::set<std::string>& skip = {}) const;
  // Sets a key to YAML text, checked against its spec (an alias's fixed options).
  void set(const OptionSpec& spec, const std::string& text, const std::string& path);

 private:
  struct Value {
    OptionType type = OptionType::String;
    std::string text;
    int64_t i = 0;
    double d = 0.0;
    bool b = false;
    std::vector<int64_t> ints;
    std::vector<double> numbers;
    YAML::Node node;
    bool given = false;
  };
  const Value& at(const std::string& name) const;
  static Value convert(const OptionSpec& spec, const YAML::Node& node, const std::string& key);
  std::map<std::string, Value> values_;
  std::vector<std::string> order_;  // the schema's order, for to_yaml
};

// A YAML mapping from key -> YAML text: "inner.name" nests, a flow sequence or mapping
// ("[1, 2]") is parsed, any other text stays the scalar it is written as.
YAML::Node yaml_mapping(const std::map<std::string, std::string>& raw);

std::string to_string(OptionType type);
// "steps" for "stpes": the closest of `names` by edit distance, or "" when none is close.
std::string nearest_name(const std::string& name, const std::vector<std::string>& names);
// One line per key: "  name  type  default  help [choices]" (scorch config / samplers).
std::string describe(const Schema& schema, const std::string& indent = "  ");
std::string join(const std::vector<std::string>& items, const std::string& sep);
// An option's range in words ("from 0 to 100", ">= 0"); "" when unbounded.
std::string range_words(const OptionSpec& spec);

}  // namespace scorch
