// YAML helpers shared by the config readers (pipeline.cpp, guidance_config.cpp).
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "scorch/error.h"

namespace scorch {

inline std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// The scalar entries of a config section; entries named in `lists` are skipped
// (the caller reads them as sequences).
inline std::map<std::string, std::string> scalars(const YAML::Node& node, const std::string& prefix,
                                           const std::set<std::string>& lists = {}) {
  std::map<std::string, std::string> out;
  if (!node || node.IsNull()) return out;
  if (!node.IsMap()) bad_input(prefix + ": expected a mapping of keys to values");
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    const std::string name = prefix.empty() ? key : prefix + "." + key;
    if (lists.count(key)) continue;
    bool nested = false;
    if (kv.second.IsSequence())
      for (const auto& item : kv.second) nested = nested || !item.IsScalar();
    if (nested && !prefix.empty()) {
      // A list of mappings or lists (a Yaml option) is passed on as flow-style YAML text.
      YAML::Emitter e;
      e.SetMapFormat(YAML::Flow);
      e.SetSeqFormat(YAML::Flow);
      e << kv.second;
      out[key] = e.c_str();
      continue;
    }
    if (kv.second.IsSequence() && !prefix.empty()) {
      // A flow sequence of scalars is passed on as "[a, b]" for list options.
      std::string text = "[";
      for (const auto& item : kv.second) {
        if (!item.IsScalar()) bad_input(name + ": expected a list of values");
        text += (text.size() > 1 ? ", " : "") + item.as<std::string>();
      }
      out[key] = text + "]";
      continue;
    }
    if (kv.second.IsMap() && !prefix.empty()) {
      // A nested mapping (a Section option) is passed on as "key.sub" entries.
      for (const auto& [sub, value] : scalars(kv.second, name))
        out[key + "." + sub] = value;
      continue;
    }
    if (kv.second.IsMap() || kv.second.IsSequence()) {
      if (prefix.empty()) continue;  // top-level sections are read separately
      bad_input(name + ": expected a single value");
    }
    out[key] = kv.second.IsNull() ? "" : kv.second.as<std::string>();
  }
  return out;
}

template <typename T>
std::vector<T> list_of(const YAML::Node& node, const std::string& name, const char* expected) {
  if (!node.IsSequence()) bad_input(name + ": expected a list of " + expected);
  std::vector<T> out;
  for (const auto& item : node) {
    try {
      out.push_back(item.as<T>());
    } catch (const YAML::Exception&) {
      bad_input(name + ": expected a list of " + expected + ", got an entry '" +
                (item.IsScalar() ? item.as<std::string>() : std::string("(not a scalar)")) + "'");
    }
  }
  return out;
}

}  // namespace scorch
