#include "scorch/options.h"

#include <algorithm>
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
    case OptionType::NumberList: return "[number]";
    case OptionType::Section: return "mapping";
    case OptionType::Yaml: return "yaml";
  }
  return "?";
}

std::string range_words(const OptionSpec& spec) {
  // Whole numbers in full (16777216, not 1.67772e+07); others as the stream writes them.
  const auto num = [](double x) {
    if (x == std::floor(x) && std::fabs(x) < 9.0e15) return std::to_string(static_cast<long long>(x));
    std::ostringstream o;
    o << x;
    return o.str();
  };
  if (std::isfinite(spec.min) && std::isfinite(spec.max)) return "from " + num(spec.min) + " to " + num(spec.max);
  if (std::isfinite(spec.min)) return ">= " + num(spec.min);
  if (std::isfinite(spec.max)) return "<= " + num(spec.max);
  return "";
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
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

bool parse_bool(const std::string& s, bool* out) {
  if (s == "true" || s == "True" || s == "1" || s == "yes") return *out = true, true;
  if (s == "false" || s == "False" || s == "0" || s == "no") return *out = false, true;
  return false;
}

// The items of a list value: a YAML sequence of scalars, or one scalar "1, 2" / "[1, 2]".
bool list_items(const YAML::Node& node, std::vector<std::string>* items) {
  items->clear();
  if (node.IsSequence()) {
    for (const auto& item : node) {
      if (!item.IsScalar()) return false;
      items->push_back(item.Scalar());
    }
    return true;
  }
  if (!node.IsScalar()) return node.IsNull();
  std::string s = node.Scalar();
  for (char& c : s)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(s);
  std::string item;
  while (in >> item) items->push_back(item);
  return true;
}

std::string scalar_text(const YAML::Node& node) { return node.IsScalar() ? node.Scalar() : ""; }

std::string flow_text(const YAML::Node& node) {
  if (node.IsScalar()) return node.Scalar();
  if (!node || node.IsNull()) return "";
  YAML::Emitter e;
  e.SetMapFormat(YAML::Flow);
  e.SetSeqFormat(YAML::Flow);
  e << node;
  return e.c_str();
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string nearest_name(const std::string& name, const std::vector<std::string>& names) {
  std::string best;
  size_t best_d = std::max<size_t>(2, name.size() / 3) + 1;
  for (const auto& n : names) {
    const size_t d = edit_distance(name, n);
    if (d < best_d) best_d = d, best = n;
  }
  return best;
}

Options::Value Options::convert(const OptionSpec& spec, const YAML::Node& node, const std::string& key) {
  Value v;
  v.type = spec.type;
  v.node = node;
  v.text = flow_text(node);
  const bool scalar = node.IsScalar() || node.IsNull();
  const std::string s = scalar_text(node);
  switch (spec.type) {
    case OptionType::Int:
      if (!scalar || !parse_int(s, &v.i)) bad_input(key + ": expected an integer, got '" + v.text + "'");
      if (double(v.i) < spec.min || double(v.i) > spec.max)
        bad_input(key + ": expected an integer " + range_words(spec) + ", got '" + v.text + "'");
      break;
    case OptionType::Number:
      if (!scalar || !parse_number(s, &v.d)) bad_input(key + ": expected a number, got '" + v.text + "'");
      if (v.d < spec.min || v.d > spec.max) bad_input(key + ": expected a number " + range_words(spec) + ", got '" + v.text + "'");
      break;
    case OptionType::Bool:
      if (!scalar || !parse_bool(s, &v.b)) bad_input(key + ": expected true or false, got '" + v.text + "'");
      break;
    case OptionType::String:
      if (!scalar) bad_input(key + ": expected a single value");
      // "" is "not set" (a required key is checked by its reader, which says it is missing)
      if (!s.empty() && !spec.choices.empty() && std::find(spec.choices.begin(), spec.choices.end(), s) == spec.choices.end())
        bad_input(key + ": expected " + join(spec.choices, " | ") + ", got '" + s + "'");
      break;
    case OptionType::IntList:
    case OptionType::NumberList: {
      std::vector<std::string> items;
      const bool ints = spec.type == OptionType::IntList;
      bool ok = list_items(node, &items);
      for (const auto& item : items) {
        int64_t i = 0;
        double d = 0.0;
        if (ints ? !parse_int(item, &i) : !parse_number(item, &d)) ok = false;
        v.ints.push_back(i);
        v.numbers.push_back(d);
      }
      if (!ok) bad_input(key + ": expected a list of " + (ints ? "integers" : "numbers") + ", got '" + v.text + "'");
      break;
    }
    case OptionType::Section:
      if (!node.IsMap() && !node.IsNull()) bad_input(key + ": expected a mapping of keys to values");
      break;
    case OptionType::Yaml:
      break;
  }
  v.text = spec.type == OptionType::String || scalar ? s : v.text;
  return v;
}

Options Options::read(const YAML::Node& node, const Schema& schema, const std::string& path,
                      const std::set<std::string>& ignore) {
  const auto key_name = [&](const std::string& name) { return path.empty() ? name : path + "." + name; };
  Options o;
  for (const auto& spec : schema) {
    YAML::Node def;
    try {
      def = spec.type == OptionType::String ? YAML::Node(spec.default_value) : YAML::Load(spec.default_value);
    } catch (const YAML::Exception&) {
      throw Error(Status::Internal, key_name(spec.name) + ": the schema's default is not YAML");
    }
    o.values_[spec.name] = convert(spec, def, key_name(spec.name));
    o.order_.push_back(spec.name);
  }
  if (!node || node.IsNull()) return o;
  if (!node.IsMap()) bad_input((path.empty() ? std::string("config") : path) + ": expected a mapping of keys to values");
  for (const auto& kv : node) {
    const std::string name = kv.first.as<std::string>();
    if (ignore.count(name)) continue;
    const auto spec = std::find_if(schema.begin(), schema.end(), [&](const OptionSpec& s) { return s.name == name; });
    if (spec == schema.end()) {
      std::vector<std::string> valid;
      for (const auto& s : schema) valid.push_back(s.name);
      for (const auto& s : ignore) valid.push_back(s);
      const std::string near = nearest_name(name, valid);
      bad_input(key_name(name) + ": unknown key" + (near.empty() ? "" : "; did you mean '" + near + "'?") +
                "; valid keys are: " + join(valid, ", "));
    }
    Value v = convert(*spec, kv.second, key_name(name));
    v.given = true;
    o.values_[name] = std::move(v);
  }
  return o;
}

YAML::Node yaml_mapping(const std::map<std::string, std::string>& raw) {
  YAML::Node root(YAML::NodeType::Map);
  for (const auto& [key, text] : raw) {
    YAML::Node node = root;
    std::string rest = key;
    for (size_t dot; (dot = rest.find('.')) != std::string::npos; rest = rest.substr(dot + 1)) {
      const std::string part = rest.substr(0, dot);
      if (!node[part] || !node[part].IsMap()) node[part] = YAML::Node(YAML::NodeType::Map);
      node.reset(node[part]);
    }
    YAML::Node value;
    try {
      value = YAML::Load(text);
    } catch (const YAML::Exception&) {
    }
    node[rest] = value.IsSequence() || value.IsMap() ? value : YAML::Node(text);
  }
  return root;
}

Options Options::parse(const std::string& path, const Schema& schema, const std::map<std::string, std::string>& raw) {
  return read(yaml_mapping(raw), schema, path);
}

void Options::set(const OptionSpec& spec, const std::string& text, const std::string& path) {
  const YAML::Node node = spec.type == OptionType::String ? YAML::Node(text) : YAML::Load(text);
  values_[spec.name] = convert(spec, node, path.empty() ? spec.name : path + "." + spec.name);
}

YAML::Node Options::to_yaml(const std::set<std::string>& skip) const {
  YAML::Node out(YAML::NodeType::Map);
  for (const auto& name : order_)
    if (!skip.count(name)) out[name] = YAML::Clone(at(name).node);
  return out;
}

const Options::Value& Options::at(const std::string& name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) throw Error(Status::Internal, "option '" + name + "' is not in the schema");
  return it->second;
}

int64_t Options::integer(const std::string& name) const { return at(name).i; }
double Options::number(const std::string& name) const { return at(name).d; }
bool Options::flag(const std::string& name) const { return at(name).b; }
const std::string& Options::str(const std::string& name) const { return at(name).text; }
const std::vector<int64_t>& Options::int_list(const std::string& name) const { return at(name).ints; }
const std::vector<double>& Options::number_list(const std::string& name) const { return at(name).numbers; }
const YAML::Node& Options::node(const std::string& name) const { return at(name).node; }
bool Options::given(const std::string& name) const { return at(name).given; }
const std::string& Options::text(const std::string& name) const { return at(name).text; }

std::string describe(const Schema& schema, const std::string& indent) {
  std::ostringstream out;
  for (const auto& s : schema) {
    out << indent << s.name << " (" << to_string(s.type);
    if (!s.default_value.empty()) out << ", default " << s.default_value;
    out << "): " << s.help;
    if (!s.choices.empty()) out << " [" << join(s.choices, " | ") << "]";
    if (!range_words(s).empty()) out << " [" << range_words(s) << "]";
    out << "\n";
  }
  return out.str();
}

}  // namespace scorch
