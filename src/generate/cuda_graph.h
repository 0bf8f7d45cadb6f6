// A piece of CUDA work captured once and replayed as a single launch.
#pragma once

#include <functional>
#include <memory>

#include <torch/types.h>

namespace densessm {

class CapturedGraph {
 public:
  /// Whether this build can capture graphs (DenseSSM built with CUDA).
  static bool available();
  /// Runs `warm_up` on a side stream (lazy initialisation such as cuBLAS workspaces must not happen during
  /// capture), then captures one call of `body` on it. `body` must read and write only tensors that outlive
  /// the graph, at fixed addresses, and must neither allocate on the host nor synchronise.
  CapturedGraph(torch::Device device, const std::function<void()>& warm_up, const std::function<void()>& body);
  ~CapturedGraph();
  /// Runs the captured work again on the current stream.
  void replay();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace densessm
