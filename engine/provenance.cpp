#include "scorch/provenance.h"
#include "scorch/io.h"

#include <zlib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "scorch/error.h"
#include "scorch/model_cache.h"

namespace scorch {

namespace {

// SHA-256 (FIPS 180-4, section 6.2): 64 rounds over 512-bit blocks of the padded message.
constexpr std::array<uint32_t, 64> kK = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

class Sha256 {
 public:
  void update(const unsigned char* p, size_t n) {
    length_ += n;
    while (n > 0) {
      const size_t take = std::min(n, size_t(64) - fill_);
      std::memcpy(block_ + fill_, p, take);
      fill_ += take, p += take, n -= take;
      if (fill_ == 64) compress(), fill_ = 0;
    }
  }
  std::string hex() {
    const uint64_t bits = length_ * 8;
    const unsigned char one = 0x80, zero = 0;
    update(&one, 1);
    while (fill_ != 56) update(&zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    update(len, 8);
    char out[65];
    for (int i = 0; i < 8; ++i) std::snprintf(out + 8 * i, 9, "%08x", h_[size_t(i)]);
    return std::string(out, 64);
  }

 private:
  void compress() {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(block_[4 * i]) << 24 | uint32_t(block_[4 * i + 1]) << 16 | uint32_t(block_[4 * i + 2]) << 8 |
             uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::array<uint32_t, 8> v = h_;
    for (int i = 0; i < 64; ++i) {
      const uint32_t s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
      const uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
      const uint32_t t1 = v[7] + s1 + ch + kK[size_t(i)] + w[i];
      const uint32_t s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
      const uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
      v = {t1 + s0 + maj, v[0], v[1], v[2], v[3] + t1, v[4], v[5], v[6]};
    }
    for (size_t i = 0; i < 8; ++i) h_[i] += v[i];
  }
  std::array<uint32_t, 8> h_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char block_[64] = {};
  size_t fill_ = 0;
  uint64_t length_ = 0;
};

const std::string kSignature("\x89PNG\r\n\x1a\n", 8);

uint32_t be32(const unsigned char* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

std::string chunk(const std::string& type, const std::string& data) {
  std::string out(4, '\0');
  const uint32_t n = uint32_t(data.size());
  for (int i = 0; i < 4; ++i) out[size_t(i)] = char(n >> (24 - 8 * i));
  const std::string body = type + data;
  const uint32_t crc = uint32_t(crc32(0, reinterpret_cast<const Bytef*>(body.data()), uInt(body.size())));
  out += body;
  for (int i = 0; i < 4; ++i) out += char(crc >> (24 - 8 * i));
  return out;
}

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Sha256 h;
  h.update(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
  return h.hex();
}

std::string sha256_file(const std::string& path, const std::string& what) {
  check_input_file(path, what);
  const std::string file = model_file_key(path);
  // Kept with the models (a server hashes a kept model's file once).
  return *cached_model<std::string>(file.empty() ? "" : "sha256|" + file, [&]() -> std::pair<std::string, size_t> {
    std::ifstream in(path, std::ios::binary);
    if (!in) bad_input(what + ": cannot open '" + path + "'");
    Sha256 h;
    std::vector<char> buf(1 << 16);
    while (in) {
      in.read(buf.data(), std::streamsize(buf.size()));
      h.update(reinterpret_cast<const unsigned char*>(buf.data()), size_t(in.gcount()));
    }
    return {h.hex(), 64};
  });
}

std::string png_with_text(const std::string& png, const std::map<std::string, std::string>& chunks) {
  // IHDR is the first chunk: 8 signature bytes, then length (4) + type (4) + 13 data + CRC (4).
  const size_t after_ihdr = 8 + 4 + 4 + 13 + 4;
  if (png.size() < after_ihdr || png.compare(0, 8, kSignature) != 0 || png.compare(12, 4, "IHDR") != 0)
    throw Error(Status::Internal, "png_with_text: not a PNG from the encoder");
  std::string text;
  for (const auto& [keyword, value] : chunks) text += chunk("tEXt", keyword + std::string(1, '\0') + value);
  return png.substr(0, after_ihdr) + text + png.substr(after_ihdr);
}

bool is_png_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char sig[8] = {};
  in.read(sig, 8);
  return in.gcount() == 8 && std::string(sig, 8) == kSignature;
}

std::map<std::string, std::string> png_text_chunks(const std::string& path, const std::string& what) {
  const std::string png = read_input_file(path, what);
  if (png.size() < 8 || png.compare(0, 8, kSignature) != 0) bad_input(what + ": '" + path + "' is not a PNG file");
  std::map<std::string, std::string> out;
  size_t pos = 8;
  while (pos + 12 <= png.size()) {
    const auto* p = reinterpret_cast<const unsigned char*>(png.data() + pos);
    const uint32_t n = be32(p);
    if (n > png.size() - pos - 12) bad_input(what + ": '" + path + "' is truncated (a chunk runs past the end)");
    const std::string type = png.substr(pos + 4, 4);
    const uint32_t crc = uint32_t(crc32(0, p + 4, uInt(n + 4)));
    if (crc != be32(p + 8 + n)) bad_input(what + ": '" + path + "' has a corrupt " + type + " chunk (CRC mismatch)");
    if (type == "tEXt") {
      const std::string data = png.substr(pos + 8, n);
      const size_t zero = data.find('\0');
      if (zero == std::string::npos) bad_input(what + ": '" + path + "' has a tEXt chunk without a keyword");
      out[data.substr(0, zero)] = data.substr(zero + 1);
    }
    if (type == "IEND") return out;
    pos += 12 + n;
  }
  bad_input(what + ": '" + path + "' is truncated (no IEND chunk)");
}

std::string provenance_json_path(const std::string& npy_path) {
  const std::string ext = ".npy";
  if (npy_path.size() > ext.size() && npy_path.compare(npy_path.size() - ext.size(), ext.size(), ext) == 0)
    return npy_path.substr(0, npy_path.size() - ext.size()) + ".json";
  return npy_path + ".json";
}

std::string provenance_json(const std::string& config_yaml, const std::string& summary) {
  return nlohmann::json{{"config", config_yaml}, {"summary", summary}}.dump(2) + "\n";
}

std::string provenance_json_config(const std::string& path, const std::string& what) {
  const std::string text = read_input_file(path, what);
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    if (j.is_object() && j.contains("config") && j["config"].is_string()) return j["config"].get<std::string>();
  } catch (const nlohmann::json::exception&) {
  }
  bad_input(what + ": '" + path + "' is not a scorch record (JSON with a \"config\" string)");
}

}  // namespace scorch
