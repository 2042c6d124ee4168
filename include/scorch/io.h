// File I/O: .npy, safetensors, and atomic writes (temporary name, then rename),
// so a failed run never leaves a partial output file.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace scorch {

// Calls write(tmp_path) with a temporary path next to `path` that keeps its
// extension, then renames it onto `path`. On any failure the temporary file
// is removed and a bad-input Error naming `what` (e.g. "output.png") is thrown.
void write_atomically(const std::string& path, const std::string& what,
                      const std::function<void(const std::string& tmp_path)>& write);

// Throws a bad-input Error naming `what` unless `path`'s directory exists and is writable and
// `path` is absent or a regular file (a device, FIFO, symlink or directory is never replaced).
void check_writable(const std::string& path, const std::string& what);

// Every file scorch reads is checked before it is opened (docs/errors.md): it must exist and
// be a regular file (a FIFO or device could block or never end; a symlink to a regular file
// is fine) of at most input_byte_limit() bytes. Errors name `what` (the key) and the path.
void check_input_file(const std::string& path, const std::string& what);
// check_input_file, then the whole file (no more than the size it had when checked, plus one byte).
std::string read_input_file(const std::string& path, const std::string& what);
// SCORCH_MAX_INPUT_BYTES if set, else the smaller of 16 GiB and half the physical memory:
// the most any one input (or an IDX file's declared data) may hold.
uint64_t input_byte_limit();

// SIGINT and SIGTERM remove the temporary files of writes in progress before the process ends
// (the default action then follows). The CLI installs it; a library caller decides itself.
void install_temp_file_cleanup();

// While alive, that cleanup also removes `path` (a temporary file, or an output already
// renamed while the run's other outputs are still being written: all or nothing).
class RemoveOnSignal {
 public:
  explicit RemoveOnSignal(const std::string& path);
  ~RemoveOnSignal();
  RemoveOnSignal(RemoveOnSignal&& other) noexcept : slot_(other.slot_) { other.slot_ = -1; }
  RemoveOnSignal(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(const RemoveOnSignal&) = delete;
  RemoveOnSignal& operator=(RemoveOnSignal&&) = delete;

 private:
  int slot_ = -1;
};
// Writes text to `path` atomically (write_atomically); errors name `what`.
void write_text_file(const std::string& path, const std::string& what, const std::string& text);

// NumPy .npy (format 1.0-3.0, little-endian, C order): f4, f8, i8, i4, u1, b1.
at::Tensor read_npy(const std::string& path, const std::string& what = "npy file");
// The same from the file's bytes; `what` names the source in errors (the fuzz harnesses).
at::Tensor parse_npy(const std::string& bytes, const std::string& what);
// The shape in a .npy file's header (the data is not read).
std::vector<int64_t> npy_shape(const std::string& path, const std::string& what = "npy file");
// Rows first .. first + count - 1 of a .npy file (along its first axis), reading only
// those; the file is checked against its header as by read_npy.
at::Tensor read_npy_rows(const std::string& path, int64_t first, int64_t count, const std::string& what = "npy file");
void write_npy(const std::string& path, const at::Tensor& tensor, const std::string& what = "npy");
// The bytes write_npy writes, in memory (the server's replies).
std::string encode_npy(const at::Tensor& tensor, const std::string& what = "npy");

// safetensors: 8-byte little-endian header length, JSON header
// {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, data.
struct SafeTensors {
  std::map<std::string, at::Tensor> tensors;
  std::map<std::string, std::string> metadata;
};
SafeTensors parse_safetensors(const std::string& bytes, const std::string& what);
SafeTensors read_safetensors(const std::string& path, const std::string& what = "model.path");
void write_safetensors(const std::string& path, const SafeTensors& st, const std::string& what = "safetensors");

// "[1, 28, 28]": the one way shapes are written in messages and metadata.
std::string shape_string(at::IntArrayRef sizes);
// Parses metadata such as "[1, 28, 28]" into positive sizes; errors name `what`.
std::vector<int64_t> parse_shape(const std::string& text, const std::string& what);

// Resolves an input file name: as given if it exists (or is absolute), else under
// scorch's data directories: SCORCH_DATA_DIR, then share/scorch next to the running
// program's bin/ (the installed layout, which the build tree mirrors: build/share/scorch).
// That is how `configs/...` and `models/...` are found from any directory.
std::string find_input_file(const std::string& path);
// The data directories searched, in order (for messages and `scorch --version`-like output).
std::vector<std::string> data_dirs();

}  // namespace scorch
