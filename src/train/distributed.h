// Data parallelism for the trainer through LibTorch's c10d: one process per device, a TCPStore rendezvous
// (rank 0 hosts it), NCCL between GPUs and Gloo between CPU processes. Each rank holds the whole model and
// (unless the run shards it, ZeRO-1 style) the whole optimizer; gradients are averaged across ranks in
// buckets while the backward pass is still running.
// The c10d types stay in distributed.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/types.h>

namespace densessm::distributed {

/// This process's place in the job, from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
/// MASTER_PORT). WORLD_SIZE unset or 1: a single process, no process group.
struct Environment {
  int64_t rank = 0;
  int64_t world_size = 1;
  int64_t local_rank = 0;  ///< rank on this machine: the GPU index of a CUDA run
  std::string master_addr;
  int master_port = 0;

  bool enabled() const { return world_size > 1; }
  /// Reads the variables; throws std::runtime_error naming a malformed or missing one.
  static Environment from_process();
};

/// The device of this rank: "cuda" (or "cuda:N") becomes cuda:LOCAL_RANK in a multi-process run (an error
/// when this machine has no such GPU).
torch::Device device_of_rank(const std::string& configured, const Environment& environment);

/// The process group of all ranks. Collectives block until every rank joins or the timeout passes; a
/// dead or unreachable peer makes them throw std::runtime_error naming the operation and this rank.
class ProcessGroup {
 public:
  /// Joins the rendezvous at MASTER_ADDR:MASTER_PORT (rank 0 hosts it) and connects to every rank:
  /// NCCL for a CUDA device, Gloo for the CPU.
  ProcessGroup(const Environment& environment, torch::Device device, std::chrono::seconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int64_t rank() const;
  int64_t world_size() const;
  /// Overwrites every tensor with rank 0's values.
  void broadcast_from_first(const std::vector<torch::Tensor>& tensors);
  /// Overwrites every tensor with rank `root`'s values (`what` names the operation in errors).
  void broadcast(const std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what);
  /// The mean of `value` over the ranks.
  double average(double value);
  /// True on every rank when it is true on any.
  bool any(bool value);
  /// Returns when every rank has called it.
  void barrier();

 private:
  friend class GradientReducer;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The rank that owns each tensor of `sizes` (element counts) when `ranks` ranks share them out: the
/// largest first, each to the rank with the fewest elements so far (the lowest rank on ties), so that the
/// shares are balanced and every rank computes the same assignment.
std::vector<int64_t> partition_by_size(const std::vector<int64_t>& sizes, int64_t ranks);

/// Copies the parameters that rank r updated to every other rank, for each r, in broadcasts of about
/// bucket_bytes (several small parameters flattened into one buffer; a large one on its own, with no copy),
/// so that sharing needs at most one bucket of extra memory. `owner[i]` is the rank of parameters[i]; all
/// of one dtype, contiguous.
void share_updated_parameters(ProcessGroup& group, const std::vector<torch::Tensor>& parameters,
                              const std::vector<int64_t>& owner, int64_t bucket_bytes = int64_t{16} << 20);

/// Averages the parameters' gradients over the ranks. Parameters are packed into buckets of about
/// bucket_bytes, last parameters first (the order their gradients appear in backward); a hook after each
/// gradient's accumulation copies it into its bucket, and a full bucket's all-reduce starts at once, in
/// bucket order on every rank, while autograd goes on with earlier layers.
class GradientReducer {
 public:
  GradientReducer(ProcessGroup& group, const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes);
  ~GradientReducer();  ///< removes the hooks
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Call before the backward pass whose gradients are final (the last micro-step of gradient
  /// accumulation); the hooks do nothing in other backward passes.
  void arm();
  /// After that backward pass: waits for the all-reduces and writes the averaged gradients back.
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace densessm::distributed
