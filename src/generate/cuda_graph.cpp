#include "generate/cuda_graph.h"

#include <stdexcept>

#ifdef DENSESSM_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/cuda.h>
#endif

namespace densessm {

#ifdef DENSESSM_WITH_CUDA

bool CapturedGraph::available() { return true; }

struct CapturedGraph::Impl {
  at::cuda::CUDAGraph graph;
};

CapturedGraph::CapturedGraph(torch::Device device, const std::function<void()>& warm_up,
                             const std::function<void()>& body)
    : impl_(std::make_unique<Impl>()) {
  const c10::cuda::CUDAGuard device_guard(device);
  torch::cuda::synchronize(device.index());
  {
    // Capture needs a stream other than the legacy default one.
    const c10::cuda::CUDAStreamGuard stream_guard(c10::cuda::getStreamFromPool(false, device.index()));
    warm_up();
    torch::cuda::synchronize(device.index());
    impl_->graph.capture_begin();
    body();
    impl_->graph.capture_end();
  }
  torch::cuda::synchronize(device.index());
}

CapturedGraph::~CapturedGraph() = default;

void CapturedGraph::replay() { impl_->graph.replay(); }

#else  // built without CUDA: nothing to capture; BatchDecoder asks available() first

struct CapturedGraph::Impl {};
bool CapturedGraph::available() { return false; }
CapturedGraph::CapturedGraph(torch::Device, const std::function<void()>&, const std::function<void()>&) {
  throw std::logic_error("CUDA graphs need DenseSSM built with CUDA");
}
CapturedGraph::~CapturedGraph() = default;
void CapturedGraph::replay() {}

#endif

}  // namespace densessm
