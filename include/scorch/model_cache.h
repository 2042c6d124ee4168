// Models kept loaded between pipelines. `scorch serve` (docs/server.md) sets a byte budget;
// every loader of a model file (TorchScript networks and stages, gaussian / gmm / empirical
// files) then keeps what it loaded under a key naming the file by its path, size and
// modification time, so a request for the same model skips the load and a changed file is
// loaded again. Past the budget the least recently used entries are evicted. The budget is
// 0 by default (the CLI and the C API): nothing is kept.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace scorch {

struct ModelCacheEntry {
  std::string key;
  size_t bytes = 0;
};

struct ModelCacheStats {
  size_t budget = 0, bytes = 0;
  uint64_t hits = 0, misses = 0, evictions = 0;
  std::vector<ModelCacheEntry> entries;  // most recently used first
};

// Shrinking the budget evicts at once; 0 empties the cache and keeps nothing.
void set_model_cache_budget(size_t bytes);
ModelCacheStats model_cache_stats();

// "canonical path|size|mtime" of an existing file; "" when it cannot be read (the loader
// then reports the problem itself).
std::string model_file_key(const std::string& path);

// The value kept under `key`, or load()'s (value, bytes), kept when it fits the budget.
// An empty key is never kept. Thread-safe; load() runs outside the cache's lock.
std::shared_ptr<const void> cached_model(const std::string& key,
                                         const std::function<std::pair<std::shared_ptr<const void>, size_t>()>& load);

template <class T>
std::shared_ptr<const T> cached_model(const std::string& key, const std::function<std::pair<T, size_t>()>& load) {
  return std::static_pointer_cast<const T>(cached_model(key, [&]() -> std::pair<std::shared_ptr<const void>, size_t> {
    auto [value, bytes] = load();
    return {std::make_shared<const T>(std::move(value)), bytes};
  }));
}

}  // namespace scorch
