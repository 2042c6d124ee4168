#include "scorch/gits.h"

#include <ATen/ATen.h>

#include <limits>
#include <string>

#include "scorch/error.h"
#include "scorch/rng.h"
#include "scorch/sampler.h"

namespace scorch {

std::vector<int> gits_path(const std::vector<std::vector<double>>& cost, int steps, double coeff) {
  const int n = int(cost.size()), last = n - 1;
  if (steps < 1 || steps > last)
    bad_input("sampler.steps: gits picks 1 to " + std::to_string(last) + " steps from its teacher grid, got " +
              std::to_string(steps));
  const double inf = std::numeric_limits<double>::infinity();
  // v[k][j]: the least cost of reaching the last point from j in k jumps; next[k][j] the first stop.
  std::vector<std::vector<double>> v(size_t(steps) + 1, std::vector<double>(size_t(n), inf));
  std::vector<std::vector<int>> next(size_t(steps) + 1, std::vector<int>(size_t(n), last));
  for (int j = 0; j < last; ++j) v[1][size_t(j)] = cost[size_t(j)][size_t(last)];
  for (int k = 2; k <= steps; ++k)
    for (int j = 0; j < last; ++j)
      for (int i = j + 1; i < last; ++i) {
        const double c = cost[size_t(j)][size_t(i)] + coeff * v[size_t(k) - 1][size_t(i)];
        if (c < v[size_t(k)][size_t(j)]) {
          v[size_t(k)][size_t(j)] = c;
          next[size_t(k)][size_t(j)] = i;
        }
      }
  std::vector<int> path = {0};
  for (int k = steps; k >= 1; --k) path.push_back(next[size_t(k)][size_t(path.back())]);
  return path;
}

std::vector<double> gits_search(Denoiser& model, const Schedule& schedule, GridSpec teacher, const GitsSpec& spec,
                                const at::Tensor& x_T, const at::Tensor& cond) {
  if (!(spec.coeff > 0.0)) bad_input("sampler.gits_coeff: expected a number > 0");
  if (spec.teacher_steps <= spec.steps)
    bad_input("sampler.gits_teacher_steps: must exceed sampler.steps (" + std::to_string(spec.steps) + ")");
  teacher.skip_type = "auto";
  teacher.steps = spec.teacher_steps;
  teacher.sigmas.clear();
  teacher.split = 0;
  teacher.part = "all";
  const std::vector<double> t = make_time_grid(schedule, teacher);
  const int n = int(t.size());
  // The teacher's run: states y_i and directions d_i at every point.
  Rng rng(0);
  SamplerContext ctx(model, schedule, rng, cond, [](const StepInfo&) { return true; });
  const OdeFrame frame{schedule};
  std::vector<at::Tensor> y(t.size()), d(t.size());
  y[0] = frame.y(x_T, t[0]);
  for (int i = 0; i + 1 < n; ++i) {
    // Heun: Euler predictor, trapezoidal corrector (2 NFE per teacher step).
    const double ti = t[size_t(i)], tn = t[size_t(i) + 1], h = frame.s(tn) - frame.s(ti);
    d[size_t(i)] = frame.dy(ctx.denoise(frame.x(y[size_t(i)], ti), ti), ti);
    const at::Tensor pred = y[size_t(i)] + h * d[size_t(i)];
    const at::Tensor d_next = frame.dy(ctx.denoise(frame.x(pred, tn), tn), tn);
    y[size_t(i) + 1] = y[size_t(i)] + (0.5 * h) * (d[size_t(i)] + d_next);
  }
  std::vector<std::vector<double>> cost(size_t(n), std::vector<double>(size_t(n), 0.0));
  for (int i = 0; i + 1 < n; ++i)
    for (int j = i + 1; j < n; ++j) {
      const at::Tensor jump = y[size_t(i)] + (frame.s(t[size_t(j)]) - frame.s(t[size_t(i)])) * d[size_t(i)];
      cost[size_t(i)][size_t(j)] = (jump - y[size_t(j)]).reshape({x_T.size(0), -1}).norm(2, 1).mean().item<double>();
    }
  std::vector<double> out;
  for (int i : gits_path(cost, spec.steps, spec.coeff)) out.push_back(t[size_t(i)]);
  return out;
}

}  // namespace scorch
