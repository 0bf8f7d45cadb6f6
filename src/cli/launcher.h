// densessm-train --nproc-per-node N: one machine's share of a data-parallel job, torchrun-style.
#pragma once

#include <string>
#include <vector>

namespace densessm::cli {

/// Starts `nproc` copies of this program with `arguments` (argv without the launcher's option) and
/// torchrun's variables: RANK = LOCAL_RANK = 0..nproc-1, WORLD_SIZE = LOCAL_WORLD_SIZE = nproc,
/// MASTER_ADDR (default 127.0.0.1) and MASTER_PORT (default: a free port), OMP_NUM_THREADS=1 unless set.
/// SIGINT and SIGTERM are passed on to every process; when one fails, the others get SIGTERM, then
/// SIGKILL after `grace_seconds`. Returns the exit status of the first process that failed, else 0.
int launch_local(int nproc, const std::vector<std::string>& arguments, int grace_seconds);

}  // namespace densessm::cli
