// The fuzz input as a file, for readers that take a path: one file per process, rewritten
// for each input. Returns "" when it cannot be written.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

inline std::string write_fuzz_input(const char* name, const uint8_t* data, size_t size) {
  const std::string path = std::string("/tmp/scorch_fuzz_") + name + "_" + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return "";
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}
