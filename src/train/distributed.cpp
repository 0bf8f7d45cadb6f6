// Data parallelism through LibTorch's c10d (see distributed.h).
//
// Gloo's headers. The torch wheel carries Gloo's code inside libtorch_cpu.so but not its headers, which
// ProcessGroupGloo.hpp includes; we compile against Debian's libgloo-dev (a 2022 snapshot), not the Gloo
// LibTorch was built from. That is safe because of what crosses the boundary:
//  - we construct ProcessGroupGloo and ProcessGroupGloo::Options ourselves, so their sizes come from our
//    headers: every Gloo-typed member of both is a std::shared_ptr or a std::vector of shared_ptrs to a
//    Gloo type, whose size and layout do not depend on the pointee; the rest are c10d and std types;
//  - the Gloo device is made by LibTorch (createDeviceForHostname / createDefaultDevice, out of line in
//    libtorch_cpu) and only travels through our code as a std::shared_ptr, never dereferenced here;
//  - every virtual function of those classes has an out-of-line key function in libtorch_cpu, so their
//    vtables come from there; we call nothing inline that touches a Gloo object, so this file emits no
//    function of Gloo that could interpose on libtorch_cpu's (the distributed_no_gloo_symbols test checks
//    libdensessm; the one Gloo name in it is std::vector<std::shared_ptr<gloo::transport::Device>> code,
//    which moves shared_ptrs and is the same whatever Device is).
// Debian's libgloo.so is never linked: two Gloos in one process would be the real danger.
#include "train/distributed.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <numeric>
#include <stdexcept>

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#ifdef DENSESSM_C10D_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DENSESSM_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/cuda/nccl.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace densessm::distributed {
namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return c10_error->what_without_backtrace();
  return e.what();
}

int64_t integer_variable(const char* name, int64_t fallback) {
  const char* text = std::getenv(name);
  if (!text || !*text) return fallback;
  char* end = nullptr;
  const long long value = std::strtoll(text, &end, 10);
  if (*end != '\0' || value < 0) {
    throw std::runtime_error(std::string("environment variable ") + name + "=\"" + text + "\": expected a non-negative integer");
  }
  return value;
}

std::string required_variable(const char* name) {
  const char* text = std::getenv(name);
  if (!text || !*text) {
    throw std::runtime_error(std::string("environment variable ") + name +
                             " is not set (needed when WORLD_SIZE > 1; densessm-train --nproc-per-node sets it)");
  }
  return text;
}

#ifdef DENSESSM_C10D_GLOO
// The network device Gloo talks through, chosen as torch.distributed does: GLOO_SOCKET_IFNAME when set;
// the loopback device for a single-machine job; else the address this machine's hostname resolves to.
std::shared_ptr<::gloo::transport::Device> gloo_device(const std::string& master_addr) {
  if (const char* interface = std::getenv("GLOO_SOCKET_IFNAME")) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(interface);
  }
  if (master_addr == "localhost" || master_addr.rfind("127.", 0) == 0) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}
#endif

#ifdef DENSESSM_C10D_NCCL
// ProcessGroupNCCL::Options embeds ncclConfig_t, so its layout follows nccl.h: the header this file was
// compiled with must be the NCCL version LibTorch was built with.
void check_nccl_header() {
  const uint64_t built = torch::cuda::nccl::version();
  const uint64_t major = built >> 32, minor = (built >> 16) & 0xffff;
  if (major != NCCL_MAJOR || minor != NCCL_MINOR) {
    throw std::runtime_error("DenseSSM was compiled against nccl.h " + std::to_string(NCCL_MAJOR) + "." +
                             std::to_string(NCCL_MINOR) + " but LibTorch uses NCCL " + std::to_string(major) + "." +
                             std::to_string(minor) + ": reconfigure with -DDENSESSM_NCCL_INCLUDE_DIR=<that NCCL's include>");
  }
}
#endif

}  // namespace

Environment Environment::from_process() {
  Environment e;
  e.world_size = integer_variable("WORLD_SIZE", 1);
  if (e.world_size < 1) throw std::runtime_error("environment variable WORLD_SIZE must be at least 1");
  if (!e.enabled()) return e;
  e.rank = integer_variable("RANK", -1);
  if (e.rank < 0) required_variable("RANK");
  if (e.rank >= e.world_size) {
    throw std::runtime_error("RANK=" + std::to_string(e.rank) + " is not below WORLD_SIZE=" + std::to_string(e.world_size));
  }
  e.local_rank = integer_variable("LOCAL_RANK", e.rank);
  e.master_addr = required_variable("MASTER_ADDR");
  required_variable("MASTER_PORT");
  const int64_t port = integer_variable("MASTER_PORT", 0);
  if (port < 1 || port > 65535) throw std::runtime_error("MASTER_PORT=" + std::to_string(port) + ": not a TCP port");
  e.master_port = static_cast<int>(port);
  return e;
}

torch::Device device_of_rank(const std::string& configured, const Environment& environment) {
  torch::Device device(configured);
  if (!environment.enabled() || !device.is_cuda()) return device;
  const int64_t available = torch::cuda::device_count();
  if (available > 0 && environment.local_rank >= available) {
    throw std::runtime_error("LOCAL_RANK=" + std::to_string(environment.local_rank) + " but this machine has " +
                             std::to_string(available) + " CUDA device(s): start at most that many ranks per machine");
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(environment.local_rank));
}

struct ProcessGroup::Impl {
  int64_t rank = 0, world_size = 1;
  torch::Device device = torch::kCPU;
  std::chrono::seconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;

  std::runtime_error failure(const std::string& what, const std::exception& e) const {
    return std::runtime_error("rank " + std::to_string(rank) + ": " + what + " failed (a rank died, or did not answer within " +
                              std::to_string(timeout.count()) + " s): " + message_of(e));
  }
  // Starts an in-place sum of `tensor` over the ranks.
  c10::intrusive_ptr<c10d::Work> start_sum(const torch::Tensor& tensor, const std::string& what) {
    std::vector<at::Tensor> tensors{tensor};
    try {
      return backend->allreduce(tensors);
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
  }
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw failure(what, e);
    }
  }
};

ProcessGroup::ProcessGroup(const Environment& environment, torch::Device device, std::chrono::seconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->rank = environment.rank;
  impl_->world_size = environment.world_size;
  impl_->device = device;
  impl_->timeout = timeout;
  const char* engine = device.is_cuda() ? "NCCL" : "Gloo";
#ifdef DENSESSM_C10D_NCCL
  if (device.is_cuda()) check_nccl_header();
#else
  if (device.is_cuda()) throw std::runtime_error("this build has no NCCL (nccl.h was not found when it was configured)");
#endif
#ifndef DENSESSM_C10D_GLOO
  if (!device.is_cuda()) {
    throw std::runtime_error("this build has no Gloo (its headers, libgloo-dev, were not found when it was configured)");
  }
#endif
  const std::string where = environment.master_addr + ":" + std::to_string(environment.master_port);
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<uint16_t>(environment.master_port);
  store_options.isServer = environment.rank == 0;
  store_options.numWorkers = static_cast<size_t>(environment.world_size);
  store_options.waitWorkers = true;
  store_options.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(environment.master_addr, store_options);
  } catch (const std::exception& e) {
    throw impl_->failure("the rendezvous of " + std::to_string(environment.world_size) + " ranks at " + where, e);
  }
  try {
#ifdef DENSESSM_C10D_NCCL
    if (device.is_cuda()) {
      c10::cuda::set_device(device.index());
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, environment.rank, environment.world_size, options);
    }
#endif
#ifdef DENSESSM_C10D_GLOO
    if (!device.is_cuda()) {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      options->devices.push_back(gloo_device(environment.master_addr));
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, environment.rank, environment.world_size, options);
    }
#endif
  } catch (const std::exception& e) {
    throw impl_->failure(std::string("connecting the ranks over ") + engine, e);
  }
}

ProcessGroup::~ProcessGroup() = default;

int64_t ProcessGroup::rank() const { return impl_->rank; }
int64_t ProcessGroup::world_size() const { return impl_->world_size; }

void ProcessGroup::broadcast_from_first(const std::vector<torch::Tensor>& tensors) {
  broadcast(tensors, 0, "broadcast of rank 0's parameters");
}

void ProcessGroup::broadcast(const std::vector<torch::Tensor>& tensors, int64_t root, const std::string& what) {
  c10d::BroadcastOptions options;
  options.rootRank = root;
  for (const auto& tensor : tensors) {
    std::vector<at::Tensor> one{tensor.detach()};
    c10::intrusive_ptr<c10d::Work> work;
    try {
      work = impl_->backend->broadcast(one, options);
    } catch (const std::exception& e) {
      throw impl_->failure(what, e);
    }
    impl_->wait(work, what);
  }
}

std::vector<int64_t> partition_by_size(const std::vector<int64_t>& sizes, int64_t ranks) {
  std::vector<size_t> order(sizes.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<int64_t> load(static_cast<size_t>(ranks), 0), owner(sizes.size(), 0);
  for (size_t i : order) {
    const auto lightest = static_cast<int64_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = lightest;
    load[static_cast<size_t>(lightest)] += sizes[i];
  }
  return owner;
}

void share_updated_parameters(ProcessGroup& group, const std::vector<torch::Tensor>& parameters,
                              const std::vector<int64_t>& owner, int64_t bucket_bytes) {
  torch::NoGradGuard no_grad;
  for (int64_t r = 0; r < group.world_size(); ++r) {
    const std::string what = "sharing rank " + std::to_string(r) + "'s updated parameters";
    std::vector<torch::Tensor> bucket;
    int64_t bytes = 0;
    // One broadcast per bucket: a lone tensor goes as it is (straight into the receivers' parameter), several
    // through a flat buffer that the receivers unpack.
    auto flush = [&] {
      if (bucket.size() == 1) {
        group.broadcast({bucket.front().detach()}, r, what);
      } else if (!bucket.empty()) {
        torch::Tensor buffer;
        if (r == group.rank()) {
          std::vector<torch::Tensor> flat;
          for (const auto& p : bucket) flat.push_back(p.detach().reshape(-1));
          buffer = torch::cat(flat);
        } else {
          int64_t count = 0;
          for (const auto& p : bucket) count += p.numel();
          buffer = torch::empty({count}, bucket.front().options());
        }
        group.broadcast({buffer}, r, what);
        if (r != group.rank()) {
          int64_t offset = 0;
          for (auto& p : bucket) {
            p.detach().copy_(buffer.narrow(0, offset, p.numel()).view_as(p));
            offset += p.numel();
          }
        }
      }
      bucket.clear();
      bytes = 0;
    };
    for (size_t i = 0; i < parameters.size(); ++i) {
      if (owner[i] != r) continue;
      const int64_t size = static_cast<int64_t>(parameters[i].nbytes());
      if (!bucket.empty() && bytes + size > bucket_bytes) flush();
      bucket.push_back(parameters[i]);
      bytes += size;
    }
    flush();
  }
}

double ProcessGroup::average(double value) {
  auto total = torch::full({1}, value, torch::TensorOptions().dtype(torch::kDouble).device(impl_->device));  // (1,)
  impl_->wait(impl_->start_sum(total, "all-reduce of a metric"), "all-reduce of a metric");
  return total.item<double>() / static_cast<double>(impl_->world_size);
}

bool ProcessGroup::any(bool value) { return average(value ? 1.0 : 0.0) > 0; }

// A one-number all-reduce rather than Backend::barrier: NCCL's barrier has to guess the device of each rank.
void ProcessGroup::barrier() { average(0); }

struct GradientReducer::Impl {
  // Where a parameter's gradient lives in its bucket, and whether this step's has been copied there.
  struct Slot {
    size_t bucket = 0;
    int64_t offset = 0, numel = 0;
    int64_t flag = 0;  // its element in the bucket that says whether this rank has a gradient for it
    bool filled = false;
  };
  // The gradients, then one flag per member (1: this rank has its gradient). The flags travel with the
  // gradients, so after the all-reduce every rank knows whether any rank had one: a parameter that no rank's
  // backward reached keeps no gradient, as in a single process (AdamW then leaves it alone).
  struct Bucket {
    torch::Tensor flat;  // (gradients_numel + members,), the parameters' dtype, on their device
    int64_t gradients_numel = 0;
    std::vector<size_t> members;
    size_t pending = 0;  // members not filled yet this step
    c10::intrusive_ptr<c10d::Work> work;
  };
  // Runs on the autograd thread after a parameter's gradient has been accumulated into .grad.
  struct ReadyHook : torch::autograd::PostAccumulateGradHook {
    ReadyHook(Impl* reducer, size_t index) : reducer(reducer), index(index) {}
    void operator()(const torch::autograd::Variable&) override { reducer->on_gradient(index); }
    Impl* reducer;
    size_t index;
  };

  ProcessGroup::Impl& group;
  std::vector<torch::Tensor> parameters;
  std::vector<Slot> slots;
  std::vector<Bucket> buckets;
  std::mutex mutex;
  bool armed = false;
  size_t next = 0;  // the first bucket whose all-reduce has not started

  explicit Impl(ProcessGroup::Impl& group) : group(group) {}

  void on_gradient(size_t index) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!armed) return;
    fill(index);
    start_ready_buckets();
  }

  void fill(size_t index) {
    Slot& slot = slots[index];
    if (slot.filled) return;
    auto view = buckets[slot.bucket].flat.narrow(0, slot.offset, slot.numel);
    const auto& grad = parameters[index].grad();
    if (grad.defined()) {
      view.copy_(grad.reshape(-1));
    } else {
      view.zero_();
      buckets[slot.bucket].flat.narrow(0, slot.flag, 1).zero_();
    }
    slot.filled = true;
    --buckets[slot.bucket].pending;
  }

  // Starts the full buckets in bucket order: every rank must issue its collectives in the same order.
  void start_ready_buckets() {
    while (next < buckets.size() && buckets[next].pending == 0) {
      Bucket& bucket = buckets[next++];
      bucket.flat.div_(group.world_size);  // the sum of grad / W is the mean (Gloo has no average)
      bucket.work = group.start_sum(bucket.flat, "gradient all-reduce");
    }
  }
};

GradientReducer::GradientReducer(ProcessGroup& group, const std::vector<torch::Tensor>& parameters, int64_t bucket_bytes)
    : impl_(std::make_unique<Impl>(*group.impl_)) {
  Impl& r = *impl_;
  r.parameters = parameters;
  r.slots.resize(parameters.size());
  // Last parameters first: backward produces their gradients first.
  std::vector<int64_t> sizes;  // numel of each bucket
  for (size_t i = parameters.size(); i-- > 0;) {
    const auto& p = parameters[i];
    const bool fits = !r.buckets.empty() && (sizes.back() + p.numel()) * p.element_size() <= bucket_bytes &&
                      parameters[r.buckets.back().members.front()].options().type_equal(p.options());
    if (!fits) {
      r.buckets.emplace_back();
      sizes.push_back(0);
    }
    r.slots[i] = {r.buckets.size() - 1, sizes.back(), p.numel(), 0, false};
    r.buckets.back().members.push_back(i);
    sizes.back() += p.numel();
  }
  for (size_t b = 0; b < r.buckets.size(); ++b) {
    Impl::Bucket& bucket = r.buckets[b];
    bucket.gradients_numel = sizes[b];
    for (size_t k = 0; k < bucket.members.size(); ++k) r.slots[bucket.members[k]].flag = sizes[b] + static_cast<int64_t>(k);
    const auto& first = parameters[bucket.members.front()];
    bucket.flat = torch::empty({sizes[b] + static_cast<int64_t>(bucket.members.size())}, first.options().requires_grad(false));
  }
  for (size_t i = 0; i < parameters.size(); ++i) {
    torch::autograd::impl::set_post_acc_grad_hooks(parameters[i], std::make_unique<Impl::ReadyHook>(&r, i));
  }
}

GradientReducer::~GradientReducer() {
  for (const auto& p : impl_->parameters) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradientReducer::arm() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  for (auto& slot : impl_->slots) slot.filled = false;
  for (auto& bucket : impl_->buckets) {
    bucket.pending = bucket.members.size();
    bucket.flat.narrow(0, bucket.gradients_numel, static_cast<int64_t>(bucket.members.size())).fill_(1);
  }
  impl_->next = 0;
  impl_->armed = true;
}

void GradientReducer::finish() {
  Impl& r = *impl_;
  {
    std::lock_guard<std::mutex> lock(r.mutex);
    for (size_t i = 0; i < r.slots.size(); ++i) r.fill(i);
    r.start_ready_buckets();
    r.armed = false;
  }
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flags;
  for (auto& bucket : r.buckets) {
    r.group.wait(bucket.work, "gradient all-reduce");
    bucket.work.reset();
    flags.push_back(bucket.flat.narrow(0, bucket.gradients_numel, static_cast<int64_t>(bucket.members.size())));
  }
  const auto reached = torch::cat(flags).to(torch::kCPU, torch::kFloat);  // (parameters,) in bucket order
  const float* any_rank = reached.data_ptr<float>();
  for (auto& bucket : r.buckets) {
    for (size_t i : bucket.members) {
      if (*any_rank++ == 0) continue;
      const Impl::Slot& slot = r.slots[i];
      auto mean = bucket.flat.narrow(0, slot.offset, slot.numel).view(r.parameters[i].sizes());
      auto& grad = r.parameters[i].mutable_grad();
      if (grad.defined()) {
        grad.copy_(mean);
      } else {
        grad = mean.clone();
      }
    }
  }
}

}  // namespace densessm::distributed
