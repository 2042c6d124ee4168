// The continuous-sampler registry: an explicit table. Each family file defines its rows
// (name, summary, option schema, how to make the sampler, the options an alias fixes, the
// options that add noise); the table below lists them. A new sampler is one file defining
// its rows plus one declaration and one line here (docs/design.md).
#include "scorch/sampler.h"

namespace scorch {

std::vector<SamplerEntry> ddim_euler_rows();   // ddim, ddpm, euler, euler_ancestral, heun, dpm_2(_ancestral)
std::vector<SamplerEntry> dpm_solver_rows();   // dpm_solver and its aliases, dpm_adaptive
std::vector<SamplerEntry> dpmpp_sde_rows();    // dpmpp_2m_sde, dpmpp_3m_sde
std::vector<SamplerEntry> dpmpp_singlestep_sde_rows();  // dpmpp_2s_ancestral, dpmpp_sde
std::vector<SamplerEntry> unipc_rows();        // unipc
std::vector<SamplerEntry> dpm_solver_v3_rows();  // dpm_solver_v3
std::vector<SamplerEntry> ipndm_rows();        // ipndm
std::vector<SamplerEntry> lms_rows();          // lms
std::vector<SamplerEntry> lcm_rows();          // lcm
std::vector<SamplerEntry> cfg_pp_rows();       // euler_cfg_pp, dpmpp_2m_cfg_pp
std::vector<SamplerEntry> restart_rows();      // restart
std::vector<SamplerEntry> deis_rows();         // deis
std::vector<SamplerEntry> res_multistep_rows();  // res_multistep, res_multistep_ancestral
std::vector<SamplerEntry> er_sde_rows();       // er_sde
std::vector<SamplerEntry> sa_solver_rows();    // sa_solver
std::vector<SamplerEntry> teleport_rows();     // teleport (wrapper)
std::vector<SamplerEntry> msg_rows();          // msg (wrapper)

const Registry<SamplerEntry>& samplers() {
  static const Registry<SamplerEntry> table("sampler", {
      ddim_euler_rows,
      dpm_solver_rows,
      dpmpp_sde_rows,
      dpmpp_singlestep_sde_rows,
      unipc_rows,
      dpm_solver_v3_rows,
      ipndm_rows,
      lms_rows,
      lcm_rows,
      cfg_pp_rows,
      restart_rows,
      deis_rows,
      res_multistep_rows,
      er_sde_rows,
      sa_solver_rows,
      teleport_rows,
      msg_rows,
  });
  return table;
}

}  // namespace scorch
