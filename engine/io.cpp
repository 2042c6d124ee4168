#include "scorch/io.h"

#include <cerrno>
#include <ATen/ATen.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <tuple>

#include "scorch/error.h"

namespace fs = std::filesystem;

namespace scorch {

namespace {

// What a path that is not a regular file is, in words.
std::string file_kind(const fs::file_status& st) {
  switch (st.type()) {
    case fs::file_type::directory: return "a directory";
    case fs::file_type::symlink: return "a symbolic link";
    case fs::file_type::block: return "a block device";
    case fs::file_type::character: return "a character device";
    case fs::file_type::fifo: return "a FIFO";
    case fs::file_type::socket: return "a socket";
    default: return "not a regular file";
  }
}

// The temporary files of writes in progress, for the signal handler: fixed slots of plain
// characters (no allocation in the handler), claimed and released with atomics.
constexpr int kTempSlots = 64;
char g_temp_paths[kTempSlots][4096];
std::atomic<bool> g_temp_claimed[kTempSlots];  // the slot is taken
std::atomic<bool> g_temp_ready[kTempSlots];    // its path is complete: the handler may use it

void remove_temps_and_reraise(int sig) {
  for (int i = 0; i < kTempSlots; ++i)
    if (g_temp_ready[i].load()) ::unlink(g_temp_paths[i]);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

}  // namespace

RemoveOnSignal::RemoveOnSignal(const std::string& path) {
  if (path.size() >= sizeof g_temp_paths[0]) return;
  for (int i = 0; i < kTempSlots; ++i) {
    bool expected = false;
    if (g_temp_claimed[i].compare_exchange_strong(expected, true)) {
      std::memcpy(g_temp_paths[i], path.c_str(), path.size() + 1);
      g_temp_ready[i].store(true);
      slot_ = i;
      return;
    }
  }
}

RemoveOnSignal::~RemoveOnSignal() {
  if (slot_ < 0) return;
  g_temp_ready[slot_].store(false);
  g_temp_claimed[slot_].store(false);
}

void install_temp_file_cleanup() {
  std::signal(SIGINT, remove_temps_and_reraise);
  std::signal(SIGTERM, remove_temps_and_reraise);
}

void check_writable(const std::string& path, const std::string& what) {
  if (path.empty()) bad_input(what + ": empty path");
  fs::path dir = fs::path(path).parent_path();
  if (dir.empty()) dir = ".";
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) bad_input(what + ": directory '" + dir.string() + "' does not exist");
  if (::access(dir.c_str(), W_OK) != 0) bad_input(what + ": directory '" + dir.string() + "' is not writable");
  const fs::file_status st = fs::symlink_status(path, ec);
  if (!ec && fs::exists(st) && !fs::is_regular_file(st))
    bad_input(what + ": '" + path + "' is " + file_kind(st) + "; scorch writes only regular files");
}

uint64_t input_byte_limit() {
  if (const char* env = std::getenv("SCORCH_MAX_INPUT_BYTES"); env && *env) {
    // Digits only: strtoull would read "-5" as 2^64 - 5, no limit at all.
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (env[0] < '0' || env[0] > '9' || !end || *end != '\0' || errno == ERANGE || v == 0)
      bad_input(std::string("SCORCH_MAX_INPUT_BYTES: expected a positive number of bytes, got '") + env + "'");
    return v;
  }
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
  const uint64_t half = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) / 2 : UINT64_MAX;
  return std::min<uint64_t>(uint64_t(16) << 30, half);
}

void check_input_file(const std::string& path, const std::string& what) {
  if (path.empty()) bad_input(what + ": empty path");
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) bad_input(what + ": '" + path + "' does not exist");
  if (!fs::is_regular_file(st)) bad_input(what + ": '" + path + "' is " + file_kind(st) + ", not a regular file");
  const uint64_t size = fs::file_size(path, ec);
  if (ec) bad_input(what + ": cannot read '" + path + "': " + ec.message());
  if (size > input_byte_limit())
    bad_input(what + ": '" + path + "' has " + std::to_string(size) + " bytes, above the input limit of " +
              std::to_string(input_byte_limit()) + " (SCORCH_MAX_INPUT_BYTES)");
  if (::access(path.c_str(), R_OK) != 0) bad_input(what + ": '" + path + "' is not readable");
}

std::string read_input_file(const std::string& path, const std::string& what) {
  check_input_file(path, what);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  std::ifstream in(path, std::ios::binary);
  if (!in) bad_input(what + ": cannot open '" + path + "'");
  std::string buf(size_t(size) + 1, '\0');
  in.read(buf.data(), std::streamsize(buf.size()));
  const size_t got = size_t(in.gcount());
  if (got > size) bad_input(what + ": '" + path + "' grew while it was read");
  buf.resize(got);
  return buf;
}

void write_atomically(const std::string& path, const std::string& what,
                      const std::function<void(const std::string&)>& write) {
  check_writable(path, what);
  const fs::path p(path);
  std::random_device rd;
  const std::string tmp =
      (p.parent_path() / ("." + p.stem().string() + ".tmp" + std::to_string(rd() % 1000000) + p.extension().string()))
          .string();
  const RemoveOnSignal slot(tmp);
  try {
    write(tmp);
    // Checked again: the path may have been replaced while the output was computed.
    check_writable(path, what);
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec) bad_input(what + ": cannot write '" + path + "': " + ec.message());
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

void write_text_file(const std::string& path, const std::string& what, const std::string& text) {
  write_atomically(path, what, [&](const std::string& tmp) {
    std::ofstream f(tmp, std::ios::binary);
    f.write(text.data(), std::streamsize(text.size()));
    if (!f) bad_input(what + ": cannot write '" + path + "'");
  });
}

std::vector<std::string> data_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("SCORCH_DATA_DIR"); env && *env) dirs.push_back(env);
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) dirs.push_back((exe.parent_path().parent_path() / "share" / "scorch").string());
  return dirs;
}

std::string find_input_file(const std::string& path) {
  std::error_code ec;
  if (path.empty() || fs::exists(path, ec) || fs::path(path).is_absolute()) return path;
  for (const std::string& root : data_dirs()) {
    const fs::path candidate = fs::path(root) / path;
    if (fs::exists(candidate, ec)) return candidate.string();
  }
  return path;
}

namespace {

std::string read_all(const std::string& path, const std::string& what) { return read_input_file(path, what); }

// dtype <-> numpy descr / safetensors name
struct DType {
  at::ScalarType type;
  const char* npy;
  const char* st;
};
const DType kDTypes[] = {
    {at::kFloat, "<f4", "F32"}, {at::kDouble, "<f8", "F64"}, {at::kLong, "<i8", "I64"},
    {at::kInt, "<i4", "I32"},   {at::kByte, "|u1", "U8"},    {at::kBool, "|b1", "BOOL"},
    {at::kHalf, "<f2", "F16"},  {at::kBFloat16, "", "BF16"},
};

at::Tensor from_bytes(const char* data, size_t nbytes, at::ScalarType type, const std::vector<int64_t>& shape) {
  // The size the shape claims, checked against the bytes before anything is allocated (a
  // file claiming a huge shape must not allocate it; found by fuzz/fuzz_npy).
  const size_t item = c10::elementSize(type);
  size_t count = 1;
  for (int64_t s : shape) {
    if (s < 0 || (s > 0 && count > nbytes / item / size_t(s) + 1)) throw std::length_error("size mismatch");
    count *= size_t(s);
  }
  if (count * item != nbytes) throw std::length_error("size mismatch");
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(type));
  if (nbytes) std::memcpy(t.data_ptr(), data, nbytes);
  return t;
}

}  // namespace

std::string shape_string(at::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + "]";
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& what) {
  std::string s = text;
  for (char& c : s)
    if (c == '[' || c == ']' || c == ',') c = ' ';
  std::istringstream in(s);
  std::vector<int64_t> shape;
  long long v;
  while (in >> v) {
    if (v <= 0) bad_input(what + ": shape '" + text + "' has a non-positive entry");
    shape.push_back(v);
  }
  if (!in.eof() || shape.empty()) bad_input(what + ": shape '" + text + "' is not a list of sizes");
  return shape;
}

at::Tensor read_npy(const std::string& path, const std::string& what) {
  return parse_npy(read_all(path, what), what + " '" + path + "'");
}

namespace {

// Where a .npy file's data lies: its dtype, shape and offset, from the header at the start
// of `buf` (which need not hold the data).
struct NpyLayout {
  at::ScalarType type;
  std::vector<int64_t> shape;
  size_t data_offset;
};

NpyLayout parse_npy_header(const std::string& buf, const std::string& what);

}  // namespace

at::Tensor parse_npy(const std::string& buf, const std::string& what) {
  const NpyLayout l = parse_npy_header(buf, what);
  try {
    return from_bytes(buf.data() + l.data_offset, buf.size() - l.data_offset, l.type, l.shape);
  } catch (const std::length_error&) {
    bad_input(what + ": data size does not match shape " + shape_string(l.shape));
  }
}

namespace {

// The layout in a .npy file's header, reading the header alone (bounded by the input limit).
NpyLayout read_npy_layout(const std::string& path, const std::string& where) {
  std::ifstream f(path, std::ios::binary);
  std::string head(12, '\0');
  f.read(head.data(), 12);
  head.resize(size_t(f.gcount()));
  size_t len = head.size();
  if (head.size() >= 10 && head[6] == 1) len = 10 + (static_cast<unsigned char>(head[8]) | (static_cast<unsigned char>(head[9]) << 8));
  if (head.size() >= 12 && (head[6] == 2 || head[6] == 3)) {
    uint32_t n;
    std::memcpy(&n, head.data() + 8, 4);
    len = 12 + size_t(n);
  }
  if (len > input_byte_limit()) bad_input(where + ": header above the input limit (SCORCH_MAX_INPUT_BYTES)");
  std::string buf(len, '\0');
  f.seekg(0);
  f.read(buf.data(), std::streamsize(len));
  buf.resize(size_t(f.gcount()));
  return parse_npy_header(buf, where);
}

}  // namespace

std::vector<int64_t> npy_shape(const std::string& path, const std::string& what) {
  check_input_file(path, what);
  return read_npy_layout(path, what + " '" + path + "'").shape;
}

at::Tensor read_npy_rows(const std::string& path, int64_t first, int64_t count, const std::string& what) {
  check_input_file(path, what);
  const std::string where = what + " '" + path + "'";
  const NpyLayout l = read_npy_layout(path, where);
  const std::vector<int64_t>& shape = l.shape;
  if (shape.empty() || first < 0 || count < 0 || first + count > shape[0])
    bad_input(where + ": rows " + std::to_string(first) + " to " + std::to_string(first + count - 1) + " are not in " +
              shape_string(shape));
  // The whole file must match the header, as for a full read; then only the rows are read.
  uint64_t row = c10::elementSize(l.type);
  for (size_t i = 1; i < shape.size(); ++i) row = row > (uint64_t(1) << 62) / uint64_t(shape[i]) ? (uint64_t(1) << 62) : row * uint64_t(shape[i]);
  const uint64_t size = fs::file_size(path);
  if (size < l.data_offset || (row > 0 && (size - l.data_offset) / row != uint64_t(shape[0])) ||
      (size - l.data_offset) != row * uint64_t(shape[0]))
    bad_input(where + ": data size does not match shape " + shape_string(shape));
  std::vector<int64_t> part = shape;
  part[0] = count;
  at::Tensor t = at::empty(part, at::TensorOptions().dtype(l.type));
  std::ifstream f(path, std::ios::binary);
  f.seekg(std::streamoff(l.data_offset + row * uint64_t(first)));
  f.read(static_cast<char*>(t.data_ptr()), std::streamsize(row * uint64_t(count)));
  if (uint64_t(f.gcount()) != row * uint64_t(count)) bad_input(where + ": truncated");
  return t;
}

namespace {

NpyLayout parse_npy_header(const std::string& buf, const std::string& what) {
  if (buf.size() < 10 || std::memcmp(buf.data(), "\x93NUMPY", 6) != 0) bad_input(what + ": not a .npy file");
  const int major = static_cast<unsigned char>(buf[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(buf[8]) | (static_cast<unsigned char>(buf[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (buf.size() < 12) bad_input(what + ": truncated header");
    uint32_t len;
    std::memcpy(&len, buf.data() + 8, 4);
    header_len = len;
    offset = 12;
  } else {
    bad_input(what + ": unsupported .npy version " + std::to_string(major));
  }
  if (offset + header_len > buf.size()) bad_input(what + ": truncated header");
  const std::string header = buf.substr(offset, header_len);
  const auto field = [&](const std::string& key) {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) bad_input(what + ": header has no '" + key + "'");
    size_t v = header.find(':', k);
    if (v == std::string::npos) bad_input(what + ": malformed header");
    v = header.find_first_not_of(' ', v + 1);
    if (v == std::string::npos) bad_input(what + ": malformed header");
    return header.substr(v);
  };
  std::string descr = field("descr");
  if (descr.size() < 2 || descr[0] != '\'') bad_input(what + ": malformed descr");
  descr = descr.substr(1, descr.find('\'', 1) - 1);
  if (field("fortran_order").rfind("False", 0) != 0) bad_input(what + ": Fortran-order arrays are not supported");
  const std::string shape_str = field("shape");
  if (shape_str.empty() || shape_str[0] != '(') bad_input(what + ": malformed shape");
  std::vector<int64_t> shape;
  {
    const std::string inner = shape_str.substr(1, shape_str.find(')') - 1);
    std::stringstream ss(inner);
    std::string item;
    while (std::getline(ss, item, ',')) {
      if (item.find_first_not_of(' ') == std::string::npos) continue;
      char* end = nullptr;
      const long long v = std::strtoll(item.c_str(), &end, 10);
      if (v < 0 || end == item.c_str()) bad_input(what + ": malformed shape '" + inner + "'");
      shape.push_back(v);
    }
  }
  const DType* dt = nullptr;
  for (const auto& d : kDTypes)
    if (descr == d.npy || (descr == "<b1" && d.type == at::kBool) || (descr == "<u1" && d.type == at::kByte))
      dt = &d;
  if (!dt) bad_input(what + ": unsupported dtype '" + descr + "' (expected <f4, <f8, <i8, <i4, |u1 or |b1)");
  return {dt->type, shape, offset + header_len};
}

}  // namespace

namespace {

// A .npy file's bytes before its data (format 1.0): magic, version, header length, header.
std::string npy_preamble(const at::Tensor& t, const std::string& what) {
  const DType* dt = nullptr;
  for (const auto& d : kDTypes)
    if (d.type == t.scalar_type() && *d.npy) dt = &d;
  if (!dt) throw Error(Status::Internal, what + ": cannot write dtype " + std::string(c10::toString(t.scalar_type())));
  std::string shape = "(";
  for (int64_t s : t.sizes()) shape += std::to_string(s) + ", ";
  if (t.dim() > 1) shape.resize(shape.size() - 2);
  if (t.dim() == 1) shape.resize(shape.size() - 1);
  shape += ")";
  std::string header =
      std::string("{'descr': '") + dt->npy + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that data starts on a 64-byte boundary, newline-terminated.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const uint16_t len = static_cast<uint16_t>(header.size());
  return std::string("\x93NUMPY\x01\x00", 8) + char(len & 0xff) + char(len >> 8) + header;
}

}  // namespace

void write_npy(const std::string& path, const at::Tensor& tensor, const std::string& what) {
  const at::Tensor t = tensor.contiguous().cpu();
  const std::string preamble = npy_preamble(t, what);
  write_atomically(path, what, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    out << preamble;
    out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.nbytes()));
    if (!out) bad_input(what + ": cannot write '" + path + "'");
  });
}

std::string encode_npy(const at::Tensor& tensor, const std::string& what) {
  const at::Tensor t = tensor.contiguous().cpu();
  return npy_preamble(t, what) + std::string(static_cast<const char*>(t.data_ptr()), t.nbytes());
}

SafeTensors read_safetensors(const std::string& path, const std::string& what) {
  return parse_safetensors(read_all(path, what), what + " '" + path + "'");
}

SafeTensors parse_safetensors(const std::string& buf, const std::string& what) {
  if (buf.size() < 8) bad_input(what + ": too short to be safetensors");
  uint64_t n;
  std::memcpy(&n, buf.data(), 8);
  if (n > buf.size() - 8) bad_input(what + ": header length " + std::to_string(n) + " exceeds the file size");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(buf.begin() + 8, buf.begin() + 8 + long(n));
  } catch (const std::exception& e) {
    bad_input(what + ": header is not valid JSON (" + e.what() + ")");
  }
  if (!header.is_object()) bad_input(what + ": header is not a JSON object");
  const size_t data_start = 8 + n, data_size = buf.size() - data_start;
  SafeTensors st;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges;  // the format's rule: they tile the data
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      if (!info.is_object()) bad_input(what + ": __metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        if (!v.is_string()) bad_input(what + ": metadata '" + k + "' is not a string");
        st.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string tw = what + ": tensor '" + name + "'";
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets"))
      bad_input(tw + " needs dtype, shape and data_offsets");
    const auto& offs = info["data_offsets"];
    if (!info["dtype"].is_string() || !info["shape"].is_array() || !offs.is_array() || offs.size() != 2 ||
        !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      bad_input(tw + ": malformed dtype, shape or data_offsets");
    const std::string dname = info["dtype"].get<std::string>();
    const DType* dt = nullptr;
    for (const auto& d : kDTypes)
      if (dname == d.st) dt = &d;
    if (!dt) bad_input(tw + ": unsupported dtype " + dname);
    std::vector<int64_t> shape;
    for (const auto& s : info["shape"]) {
      if (!s.is_number_unsigned() || s.get<uint64_t>() > (uint64_t(1) << 40)) bad_input(tw + ": malformed shape");
      shape.push_back(s.get<int64_t>());
    }
    const uint64_t b = offs[0].get<uint64_t>(), e = offs[1].get<uint64_t>();
    if (b > e || e > data_size) bad_input(tw + ": data_offsets out of range");
    ranges.emplace_back(b, e, name);
    try {
      st.tensors[name] = from_bytes(buf.data() + data_start + b, e - b, dt->type, shape);
    } catch (const std::exception&) {
      bad_input(tw + ": byte size does not match shape " + shape_string(shape) + " and dtype " + dname);
    }
  }
  // The tensors' byte ranges cover the data exactly once: no overlap (two names, one buffer),
  // no hole (bytes no tensor owns).
  std::sort(ranges.begin(), ranges.end());
  uint64_t end = 0;
  std::string last;
  for (const auto& [b, e, name] : ranges) {
    if (b < end) bad_input(what + ": tensors '" + last + "' and '" + name + "' overlap");
    if (b > end)
      bad_input(what + ": bytes " + std::to_string(end) + " to " + std::to_string(b) + " of the data belong to no tensor");
    end = e;
    last = name;
  }
  if (end != data_size)
    bad_input(what + ": bytes " + std::to_string(end) + " to " + std::to_string(data_size) + " of the data belong to no tensor");
  return st;
}

void write_safetensors(const std::string& path, const SafeTensors& st, const std::string& what) {
  nlohmann::json header = nlohmann::json::object();
  if (!st.metadata.empty()) header["__metadata__"] = st.metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : st.tensors) {
    const at::Tensor t = tensor.contiguous().cpu();
    const DType* dt = nullptr;
    for (const auto& d : kDTypes)
      if (d.type == t.scalar_type()) dt = &d;
    if (!dt) throw Error(Status::Internal, what + ": cannot write dtype of tensor '" + name + "'");
    header[name] = {{"dtype", dt->st},
                    {"shape", std::vector<int64_t>(t.sizes().begin(), t.sizes().end())},
                    {"data_offsets", {offset, offset + uint64_t(t.nbytes())}}};
    offset += t.nbytes();
    data.push_back(t);
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  write_atomically(path, what, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    const uint64_t n = h.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << h;
    for (const auto& t : data) out.write(static_cast<const char*>(t.data_ptr()), std::streamsize(t.nbytes()));
    if (!out) bad_input(what + ": cannot write '" + path + "'");
  });
}

}  // namespace scorch
