// The decode loop of one batch: a recurrent step of the model and the choice of the next tokens. On CUDA
// the two are captured once in a CUDA graph, over tensors kept at fixed addresses (state, seen-token mask,
// sampling noise, input tokens), and replayed for every token.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/core/Generator.h>
#include <torch/types.h>

#include "densessm/model.h"
#include "densessm/state.h"
#include "generate/sampling.h"

namespace densessm {

class CapturedGraph;

class BatchDecoder {
 public:
  /// The graph is used only when `cuda_graph` is set and the model is on a CUDA device.
  BatchDecoder(CausalLM model, const SamplingParams& params, int64_t batch_size, bool cuda_graph);
  ~BatchDecoder();

  /// Starts a batch from its prefilled state, the mask of tokens already seen (B, V) bool and the logits
  /// after each prompt (B, V). Returns the first tokens (B) int64. The draws restart from `seed`.
  torch::Tensor start(const DecodeState& state, const torch::Tensor& seen, const torch::Tensor& last_logits,
                      uint64_t seed);
  /// tokens (B) -> the next tokens (B), advancing the state. The result is valid until the next call.
  torch::Tensor next(const torch::Tensor& tokens);

  int64_t batch_size() const { return batch_size_; }
  bool uses_cuda_graph() const { return cuda_graph_; }
  const DecodeState& state() const { return state_; }

 private:
  void draw_noise();
  torch::Tensor step(const torch::Tensor& tokens, DecodeState& state);
  void capture();

  CausalLM model_;
  SamplingParams params_;
  int64_t batch_size_;
  bool cuda_graph_;
  at::Generator rng_;
  DecodeState state_;
  torch::Tensor seen_;    // (B, V) bool
  torch::Tensor noise_;   // (B, V) float32 Exp(1) draws; undefined when greedy
  torch::Tensor tokens_;  // (B) int64: the graph's input
  torch::Tensor next_;    // (B) int64: the graph's output
  std::unique_ptr<CapturedGraph> graph_;
};

}  // namespace densessm
