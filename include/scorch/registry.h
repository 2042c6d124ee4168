// The registry template behind both sampler tables (continuous and discrete): an explicit
// list of entries, looked up by name. No static self-registration (a static library drops
// unreferenced registrars): a new sampler is one file plus one row in its table.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "scorch/error.h"
#include "scorch/options.h"

namespace scorch {

// Entry: any struct with `std::string name`.
template <class Entry>
class Registry {
 public:
  // The table: each family function returns the rows one file defines, in order.
  using Family = std::vector<Entry> (*)();
  Registry(std::string kind, std::initializer_list<Family> families) : kind_(std::move(kind)) {
    for (Family family : families)
      for (auto& row : family()) entries_.push_back(std::move(row));
  }

  const std::vector<Entry>& entries() const { return entries_; }
  const Entry* lookup(const std::string& name) const {
    for (const auto& e : entries_)
      if (e.name == name) return &e;
    return nullptr;
  }
  // Throws a bad-input Error at `key` naming the nearest and every registered name.
  const Entry& find(const std::string& name, const std::string& key = "sampler.name") const {
    if (const Entry* e = lookup(name)) return *e;
    const std::vector<std::string> valid = names();
    const std::string near = nearest_name(name, valid);
    bad_input(key + ": unknown " + kind_ + " '" + name + "'" + (near.empty() ? "" : "; did you mean '" + near + "'?") +
              "; registered " + kind_ + "s are: " + join(valid, ", "));
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& e : entries_) out.push_back(e.name);
    return out;
  }

 private:
  std::string kind_;
  std::vector<Entry> entries_;
};

}  // namespace scorch
