// What the DPM-Solver family file exposes beyond its registry rows (its tests use it).
#pragma once

#include <vector>

namespace scorch {

// The official singlestep order list for a step budget, e.g. (10, 3) -> 3, 3, 3, 1.
std::vector<int> dpm_solver_singlestep_orders(int steps, int order);

}  // namespace scorch
