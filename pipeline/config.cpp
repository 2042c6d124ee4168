#include "scorch/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include "default_config.h"
#include "scorch/error.h"
#include "scorch/io.h"
#include "scorch/provenance.h"

namespace scorch {

const char* default_config_text() { return kDefaultConfig; }

namespace {

// Keys are names: a mapping or a list as a key (YAML's "? " complex keys) is an error, and
// so is a key given twice in one mapping (YAML says keys are unique; a parser that kept the
// last one would drop the first silently).
void check_unique_keys(const YAML::Node& node, const std::string& source, int depth = 0) {
  if (depth > 64) bad_input(source + ": nested more than 64 levels deep");
  if (node.IsMap()) {
    std::set<std::string> seen;
    for (const auto& kv : node) {
      if (!kv.first.IsScalar())
        bad_input(source + ":" + std::to_string(kv.first.Mark().line + 1) + ": a key must be a name, not a " +
                  (kv.first.IsMap() ? "mapping" : kv.first.IsSequence() ? "list" : "null"));
      const std::string key = kv.first.Scalar();
      if (kv.first.IsScalar() && !seen.insert(key).second)
        bad_input(source + ":" + std::to_string(kv.first.Mark().line + 1) + ": duplicate key '" + key + "'");
      check_unique_keys(kv.second, source, depth + 1);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) check_unique_keys(item, source, depth + 1);
  }
}

}  // namespace

YAML::Node parse_yaml(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    bad_input(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
              ": invalid YAML: " + e.msg);
  }
  check_unique_keys(root, source);
  return root;
}

namespace {

void apply_override(YAML::Node& root, const std::string& assignment) {
  const std::string what = "--set " + assignment;
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) bad_input(what + ": expected key.path=value");
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  std::string part;
  while (std::getline(ss, part, '.')) {
    if (part.empty()) bad_input(what + ": empty component in key '" + key + "'");
    parts.push_back(part);
  }
  if (key.back() == '.') bad_input(what + ": empty component in key '" + key + "'");
  const YAML::Node value = parse_yaml(text, what);
  if (!(value.IsScalar() || value.IsSequence() || value.IsNull()))
    bad_input(what + ": the value must be a scalar or a flow sequence");
  YAML::Node node = root;
  // In a list (model.inputs, guidance.terms) a component is an index: model.inputs.0.file.
  const auto list_index = [&](const YAML::Node& list, const std::string& part) {
    const bool digits = part.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoull(part) >= list.size())
      bad_input(what + ": '" + part + "' is not an index of that list (0 to " + std::to_string(list.size() - 1) + ")");
    return size_t(std::stoull(part));
  };
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (node.IsSequence()) {
      node.reset(node[list_index(node, parts[i])]);
      continue;
    }
    YAML::Node child = node[parts[i]];
    if (child && !child.IsMap() && !child.IsSequence() && !child.IsNull())
      bad_input(what + ": '" + parts[i] + "' is a value, not a section");
    if (child && child.IsSequence() && child.size() == 0)
      bad_input(what + ": '" + parts[i] + "' is an empty list");
    if (!child || child.IsNull()) node[parts[i]] = YAML::Node(YAML::NodeType::Map);
    node.reset(node[parts[i]]);
  }
  if (node.IsSequence())
    node[list_index(node, parts.back())] = value;
  else
    node[parts.back()] = value;
}

}  // namespace

std::string config_text(const std::string& file, const std::string& what) {
  // Checked before anything opens it: a FIFO or device would block or never end.
  check_input_file(file, "--config");
  // An output of scorch generate: the PNG's `scorch` chunk or the .npy record's config.
  if (is_png_file(file)) {
    const auto chunks = png_text_chunks(file, "--config");
    const auto it = chunks.find("scorch");
    if (it == chunks.end())
      bad_input("--config: '" + what + "' is a PNG without scorch metadata (not written by scorch generate)");
    return it->second;
  }
  if (file.size() > 5 && file.compare(file.size() - 5, 5, ".json") == 0) return provenance_json_config(file, "--config");
  return read_input_file(file, "--config");
}

YAML::Node load_config(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node root;
  if (path.empty()) {
    root = parse_yaml(default_config_text(), "configs/default.yaml (built in)");
  } else {
    const std::string file = find_input_file(path);
    root = parse_yaml(config_text(file, path), path);
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) bad_input((path.empty() ? std::string("config") : path) + ": the top level must be a mapping");
  for (const auto& o : overrides) apply_override(root, o);
  return root;
}

YAML::Node load_config_text(const std::string& text, const std::vector<std::string>& overrides) {
  YAML::Node root = parse_yaml(text, "config");
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) bad_input("config: the top level must be a mapping");
  for (const auto& o : overrides) apply_override(root, o);
  return root;
}

}  // namespace scorch
