#include "densessm/state.h"

#include <torch/torch.h>

namespace densessm {
namespace {

int64_t bytes_of(const torch::Tensor& t) { return t.defined() ? static_cast<int64_t>(t.nbytes()) : 0; }

template <typename Fn>
DecodeState map_tensors(const DecodeState& in, Fn fn) {
  auto apply = [&](const torch::Tensor& t) { return t.defined() ? fn(t) : t; };
  DecodeState out;
  out.position = apply(in.position);
  for (const LayerState& layer : in.layers) out.layers.push_back({apply(layer.kv), apply(layer.conv), apply(layer.ssm)});
  return out;
}

}  // namespace

int64_t DecodeState::nbytes() const {
  int64_t total = bytes_of(position);
  for (const LayerState& layer : layers) total += bytes_of(layer.kv) + bytes_of(layer.conv) + bytes_of(layer.ssm);
  return total;
}

DecodeState DecodeState::clone() const {
  return map_tensors(*this, [](const torch::Tensor& t) { return t.clone(); });
}

DecodeState DecodeState::select(const torch::Tensor& indices) const {
  return map_tensors(*this, [&](const torch::Tensor& t) { return t.index_select(0, indices.to(t.device())); });
}

DecodeState DecodeState::concat(const std::vector<DecodeState>& parts) {
  TORCH_CHECK(!parts.empty(), "DecodeState::concat: no parts");
  for (const DecodeState& part : parts) {
    TORCH_CHECK(part.layers.size() == parts.front().layers.size(), "DecodeState::concat: parts of different models");
  }
  auto cat = [&](auto field) {
    if (!field(parts.front()).defined()) return torch::Tensor();
    std::vector<torch::Tensor> tensors;
    for (const DecodeState& part : parts) tensors.push_back(field(part));
    return torch::cat(tensors, 0);
  };
  DecodeState out;
  out.position = cat([](const DecodeState& s) { return s.position; });
  for (size_t i = 0; i < parts.front().layers.size(); ++i) {
    out.layers.push_back({cat([i](const DecodeState& s) { return s.layers[i].kv; }),
                          cat([i](const DecodeState& s) { return s.layers[i].conv; }),
                          cat([i](const DecodeState& s) { return s.layers[i].ssm; })});
  }
  return out;
}

}  // namespace densessm
