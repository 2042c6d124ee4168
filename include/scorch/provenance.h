// How an output was made, carried with it: PNG text chunks (tEXt: `scorch` holds the
// resolved config as YAML, `parameters` a one-line summary that other image tools show),
// and the SHA-256 of model files. Reading a PNG's chunks checks their CRCs.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace scorch {

// The hex SHA-256 of a file's bytes (FIPS 180-4). A missing file is a bad-input Error naming `what`.
std::string sha256_file(const std::string& path, const std::string& what);
std::string sha256_hex(const std::string& bytes);

// PNG bytes with tEXt chunks (keyword -> Latin-1 text) inserted right after IHDR.
std::string png_with_text(const std::string& png, const std::map<std::string, std::string>& chunks);
// The tEXt chunks of a PNG file. Not a PNG, a truncated file or a CRC mismatch is a
// bad-input Error naming `what`.
std::map<std::string, std::string> png_text_chunks(const std::string& path, const std::string& what);
// Whether the file starts with the PNG signature.
bool is_png_file(const std::string& path);

// The record written beside an .npy output: x.npy -> x.json (path + ".json" otherwise).
std::string provenance_json_path(const std::string& npy_path);
// {"config": <the resolved config as YAML text>, "summary": <one line>} as JSON text.
std::string provenance_json(const std::string& config_yaml, const std::string& summary);
// The config text of such a record; a file that is not one is a bad-input Error naming `what`.
std::string provenance_json_config(const std::string& path, const std::string& what);

}  // namespace scorch
