// Reading YAML configs and applying `--set key.path=value` overrides.
#pragma once

#include <yaml-cpp/yaml.h>

#include "scorch/options.h"

#include <string>
#include <vector>

namespace scorch {

// Parses YAML text; a syntax error is a bad-input Error "<source>:<line>:<col>: ...".
YAML::Node parse_yaml(const std::string& text, const std::string& source);

// The text of a config file: YAML, or the config recorded in a scorch output (a PNG's
// `scorch` chunk, an .npy's .json record). `what` names the file in errors.
std::string config_text(const std::string& file, const std::string& what);

// Loads `path` (empty: the embedded configs/default.yaml; a scorch PNG or .json record: the
// config it was made with) and applies each override "dotted.key=value", whose value parses
// as a YAML scalar or flow sequence.
YAML::Node load_config(const std::string& path, const std::vector<std::string>& overrides);

// The same from YAML text (the C API's config_yaml).
YAML::Node load_config_text(const std::string& text, const std::vector<std::string>& overrides);

// The text of configs/default.yaml, compiled in.
const char* default_config_text();

// Every config section's schema, in the order `scorch config` prints them (docs/configuration.md
// is checked against these). `path` is the section ("" for the top level, "guidance.terms[]" for
// a list entry); sections of token models come after the continuous ones.
struct SectionSchema {
  std::string path;
  std::string help;
  Schema keys;
};
std::vector<SectionSchema> config_schemas();

}  // namespace scorch
