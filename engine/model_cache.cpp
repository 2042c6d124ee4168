#include "scorch/model_cache.h"

#include <filesystem>
#include <list>
#include <mutex>
#include <unordered_map>

namespace fs = std::filesystem;

namespace scorch {

namespace {

struct Cache {
  struct Entry {
    std::string key;
    std::shared_ptr<const void> value;
    size_t bytes;
  };
  std::mutex mutex;
  size_t budget = 0, bytes = 0;
  uint64_t hits = 0, misses = 0, evictions = 0;
  std::list<Entry> lru;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index;

  // Drops least recently used entries until `extra` more bytes fit (callers hold the lock).
  void make_room(size_t extra) {
    while (!lru.empty() && bytes + extra > budget) {
      bytes -= lru.back().bytes;
      index.erase(lru.back().key);
      lru.pop_back();
      ++evictions;
    }
  }
};

Cache& cache() {
  static Cache c;
  return c;
}

}  // namespace

void set_model_cache_budget(size_t b) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.budget = b;
  c.make_room(0);
}

ModelCacheStats model_cache_stats() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  ModelCacheStats s;
  s.budget = c.budget;
  s.bytes = c.bytes;
  s.hits = c.hits;
  s.misses = c.misses;
  s.evictions = c.evictions;
  for (const auto& e : c.lru) s.entries.push_back({e.key, e.bytes});
  return s;
}

std::string model_file_key(const std::string& path) {
  std::error_code ec;
  const fs::path canonical = fs::canonical(path, ec);
  if (ec) return "";
  const auto size = fs::file_size(canonical, ec);
  if (ec) return "";
  const auto mtime = fs::last_write_time(canonical, ec);
  if (ec) return "";
  return canonical.string() + "|" + std::to_string(size) + "|" + std::to_string(mtime.time_since_epoch().count());
}

std::shared_ptr<const void> cached_model(const std::string& key,
                                         const std::function<std::pair<std::shared_ptr<const void>, size_t>()>& load) {
  Cache& c = cache();
  {
    std::lock_guard<std::mutex> lock(c.mutex);
    if (c.budget == 0 || key.empty()) {
      ++c.misses;
    } else if (const auto it = c.index.find(key); it != c.index.end()) {
      c.lru.splice(c.lru.begin(), c.lru, it->second);
      ++c.hits;
      return it->second->value;
    } else {
      ++c.misses;
    }
  }
  auto [value, bytes] = load();
  std::lock_guard<std::mutex> lock(c.mutex);
  if (key.empty() || bytes > c.budget || c.index.count(key)) return value;
  c.make_room(bytes);
  c.lru.push_front({key, value, bytes});
  c.index[key] = c.lru.begin();
  c.bytes += bytes;
  return value;
}

}  // namespace scorch
