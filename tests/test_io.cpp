#include "scorch/io.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "scorch/error.h"

namespace fs = std::filesystem;

namespace scorch {
namespace {

std::string tmp(const std::string& name) { return (fs::temp_directory_path() / ("scorch_io_" + name)).string(); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST(Npy, RoundTrip) {
  for (auto type : {at::kFloat, at::kDouble, at::kLong, at::kInt, at::kByte}) {
    const at::Tensor t = (at::rand({3, 4, 5}) * 100).to(type);
    const std::string p = tmp("rt.npy");
    write_npy(p, t);
    const at::Tensor r = read_npy(p);
    EXPECT_EQ(r.scalar_type(), type);
    EXPECT_TRUE(at::equal(r, t));
    std::remove(p.c_str());
  }
}

// A file written by NumPy itself (np.save(np.arange(6, dtype='<f8').reshape(2, 3))).
TEST(Npy, ReadsNumpyHeader) {
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }";
  header.append(118 - header.size(), ' ');
  header += '\n';
  std::string bytes = std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + char(0) + header;
  for (int i = 0; i < 6; ++i) {
    const double v = i;
    bytes.append(reinterpret_cast<const char*>(&v), 8);
  }
  const std::string p = tmp("np.npy");
  write_bytes(p, bytes);
  const at::Tensor r = read_npy(p);
  EXPECT_EQ(r.sizes(), at::IntArrayRef({2, 3}));
  EXPECT_EQ(r[1][2].item<double>(), 5.0);
  std::remove(p.c_str());
}

TEST(Npy, RejectsBadFiles) {
  const std::string p = tmp("bad.npy");
  EXPECT_THROW(read_npy("/nonexistent.npy"), Error);
  write_bytes(p, "not numpy at all");
  EXPECT_THROW(read_npy(p), Error);
  write_npy(p, at::zeros({4, 4}));
  {  // truncate the data
    fs::resize_file(p, fs::file_size(p) - 10);
  }
  EXPECT_THROW(read_npy(p), Error);
  std::string header = "{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }\n";
  write_bytes(p, std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + char(0) + header + std::string(16, 0));
  EXPECT_THROW(read_npy(p), Error);
  // a shape claiming 2^62 elements over 16 bytes: an error before anything is allocated
  // (fuzz/fuzz_npy found the allocation), also when the product overflows
  for (const char* shape : {"(4611686018427387904,)", "(4294967296, 4294967296, 16)"}) {
    header = std::string("{'descr': '<f8', 'fortran_order': False, 'shape': ") + shape + ", }\n";
    write_bytes(p, std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + char(0) + header + std::string(16, 0));
    EXPECT_THROW(parse_npy(std::string("\x93NUMPY\x01\x00", 8) + char(header.size()) + char(0) + header + std::string(16, 0), "t"), Error);
    EXPECT_THROW(read_npy(p), Error);
  }
  std::remove(p.c_str());
}

TEST(SafeTensors, RoundTripWithMetadata) {
  SafeTensors st;
  st.tensors["a"] = at::randn({2, 3});
  st.tensors["b"] = at::arange(5, at::kLong);
  st.metadata["scorch.type"] = "test";
  const std::string p = tmp("rt.safetensors");
  write_safetensors(p, st);
  const SafeTensors r = read_safetensors(p);
  EXPECT_TRUE(at::equal(r.tensors.at("a"), st.tensors["a"]));
  EXPECT_TRUE(at::equal(r.tensors.at("b"), st.tensors["b"]));
  EXPECT_EQ(r.metadata.at("scorch.type"), "test");
  std::remove(p.c_str());
}

TEST(SafeTensors, RejectsBadFiles) {
  const std::string p = tmp("bad.safetensors");
  write_bytes(p, "abc");
  EXPECT_THROW(read_safetensors(p), Error);
  const auto with_header = [&](const std::string& json, size_t data) {
    const uint64_t n = json.size();
    write_bytes(p, std::string(reinterpret_cast<const char*>(&n), 8) + json + std::string(data, 0));
  };
  with_header("{not json", 0);
  EXPECT_THROW(read_safetensors(p), Error);
  with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8);  // past the end
  EXPECT_THROW(read_safetensors(p), Error);
  with_header(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", 16);  // size mismatch
  EXPECT_THROW(read_safetensors(p), Error);
  with_header(R"({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}})", 8);
  EXPECT_THROW(read_safetensors(p), Error);
  const uint64_t huge = uint64_t(1) << 40;
  write_bytes(p, std::string(reinterpret_cast<const char*>(&huge), 8) + "{}");
  EXPECT_THROW(read_safetensors(p), Error);
  // The tensors must tile the data: two names on one buffer, and bytes nobody owns, are refused.
  const auto message = [&] {
    try {
      read_safetensors(p);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12);
  EXPECT_NE(message().find("tensors 'a' and 'b' overlap"), std::string::npos) << message();
  with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                  "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})", 12);
  EXPECT_NE(message().find("bytes 4 to 8 of the data belong to no tensor"), std::string::npos) << message();
  with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 12);
  EXPECT_NE(message().find("bytes 4 to 12 of the data belong to no tensor"), std::string::npos) << message();
  with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                  "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12);
  EXPECT_EQ(read_safetensors(p).tensors.size(), 2u);  // tiled: fine
  std::remove(p.c_str());
}

TEST(AtomicWrite, FailureLeavesNothing) {
  const std::string dir = tmp("atomic_dir");
  fs::create_directories(dir);
  const std::string p = dir + "/out.npy";
  EXPECT_THROW(write_atomically(p, "test", [](const std::string& t) {
                 std::ofstream(t) << "partial";
                 bad_input("simulated failure");
               }),
               Error);
  EXPECT_TRUE(fs::is_empty(dir));
  EXPECT_THROW(write_npy("/nonexistent_dir/out.npy", at::zeros({1})), Error);
  fs::remove_all(dir);
}

// The message of the bad-input Error fn throws ("" if none).
template <typename F>
std::string bad_input_message(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.status(), Status::BadInput) << e.what();
    return e.what();
  }
  return "";
}

// Outputs: never replace what is not a regular file (a FIFO, a symbolic link, a directory),
// checked before any work, and the node is still there afterwards.
TEST(AtomicWrite, RefusesNonRegularTargets) {
  const std::string dir = tmp("targets");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string fifo = dir + "/fifo.npy", link = dir + "/link.npy", sub = dir + "/sub.npy",
                    regular = dir + "/regular.npy";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write_bytes(regular, "old");
  fs::create_symlink(regular, link);
  fs::create_directories(sub);
  for (const auto& [path, kind] : {std::pair{fifo, "is a FIFO"}, std::pair{link, "is a symbolic link"},
                                   std::pair{sub, "is a directory"}}) {
    const std::string msg = bad_input_message([&] { write_npy(path, at::zeros({2}), "output.npy"); });
    EXPECT_NE(msg.find(std::string("output.npy: '") + path + "' " + kind), std::string::npos) << msg;
  }
  EXPECT_TRUE(fs::is_fifo(fifo));
  EXPECT_TRUE(fs::is_symlink(link));
  std::string old;
  std::getline(std::ifstream(regular), old);
  EXPECT_EQ(old, "old");
  write_npy(regular, at::zeros({2}), "output.npy");  // a regular file is replaced
  EXPECT_EQ(read_npy(regular).numel(), 2);
  // nothing else left in the folder
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 4);
  fs::remove_all(dir);
}

// Inputs: a FIFO (without a writer: opening it would block), a character device, a directory
// and a missing path are refused at once by kind; a file above the limit by size.
TEST(InputFiles, RefusesWhatIsNotABoundedRegularFile) {
  const std::string dir = tmp("inputs");
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string fifo = dir + "/fifo.npy";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_NE(bad_input_message([&] { read_npy(fifo); }).find("is a FIFO, not a regular file"), std::string::npos);
  EXPECT_NE(bad_input_message([&] { read_npy("/dev/zero"); }).find("is a character device"), std::string::npos);
  EXPECT_NE(bad_input_message([&] { read_npy(dir); }).find("is a directory"), std::string::npos);
  EXPECT_NE(bad_input_message([&] { read_npy(dir + "/none.npy"); }).find("does not exist"), std::string::npos);
  write_npy(dir + "/big.npy", at::zeros({1000}));
  ::setenv("SCORCH_MAX_INPUT_BYTES", "500", 1);
  EXPECT_EQ(input_byte_limit(), 500u);
  const std::string msg = bad_input_message([&] { read_npy(dir + "/big.npy"); });
  ::unsetenv("SCORCH_MAX_INPUT_BYTES");
  EXPECT_NE(msg.find("above the input limit of 500 (SCORCH_MAX_INPUT_BYTES)"), std::string::npos) << msg;
  EXPECT_EQ(read_npy(dir + "/big.npy").numel(), 1000);
  EXPECT_GT(input_byte_limit(), uint64_t(1) << 20);
  fs::remove_all(dir);
}

// SIGTERM while an output is being written: the temporary file is removed, then the process
// ends by the signal (run in a child process).
TEST(AtomicWrite, SignalRemovesTheTemporaryFile) {
  const std::string dir = tmp("signal");
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (int sig : {SIGTERM, SIGINT}) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      install_temp_file_cleanup();
      write_atomically(dir + "/out.npy", "output.npy", [&](const std::string& t) {
        std::ofstream(t) << "partial";
        std::raise(sig);
      });
      std::_Exit(0);  // not reached
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == sig) << status;
    EXPECT_TRUE(fs::is_empty(dir)) << "signal " << sig;
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace scorch
