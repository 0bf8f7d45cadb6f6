// Text generation: prompts in, continuations out, streamed token by token.
//
// Each prompt is prefilled with the chunkwise form (one pass that leaves exactly the recurrent state), then
// all sequences of the batch decode together with CausalLM::step, O(1) time and memory per token. The next
// token is chosen on the model's device (repetition penalty, temperature, top-k, top-p, then a draw), so the
// host only reads the sampled ids when it has to stream text or check for a stop. On CUDA the decode step
// of the batch, sampling included, is captured once in a CUDA graph and replayed.
//
//   densessm::Checkpoint c = densessm::load_checkpoint("runs/kjv/train/checkpoints/step-00000600");
//   densessm::Generator generator(c.model, c.tokenizer, options);
//   auto out = generator.generate({"In the beginning"}, [](const densessm::TokenEvent& e) { std::cout << e.text; });
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/types.h>

#include "densessm/config.h"
#include "densessm/model.h"
#include "densessm/tokenizer.h"

namespace densessm {

class BatchDecoder;  // the decode loop of one batch (src/generate/batch_decoder.h)

/// Thrown for invalid options, prompts or checkpoints; what() names the problem.
class GenerateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  double temperature = 1.0;        ///< 0: greedy (argmax); otherwise logits / temperature
  int64_t top_k = 0;               ///< keep the k most likely tokens; 0: all
  double top_p = 1.0;              ///< keep the smallest set of tokens whose probability reaches top_p, in (0, 1]
  double repetition_penalty = 1.0; ///< > 0; logits of tokens already in the sequence: / p if positive, * p if not
  uint64_t seed = 0;               ///< the same seed and prompts give the same tokens, eager or graph-replayed
  bool stop_at_eos = true;         ///< a sequence ends after the tokenizer's (or config's) eos
  std::vector<std::string> stop_strings;  ///< a sequence ends when its text contains one (cut before it)
  bool add_bos = false;            ///< put bos before each prompt (only if the training data had it)
  bool cuda_graph = true;          ///< on CUDA, capture the decode step in a CUDA graph
  std::optional<torch::ScalarType> dtype;  ///< cast the model (float32, bfloat16, float16, float64)
  std::optional<torch::Device> device;     ///< move the model there
};

/// Throws GenerateError naming the first invalid value.
void validate(const GenerateOptions& options);

enum class StopReason { kLength, kEos, kStopString };
std::string to_string(StopReason reason);

/// One generated token, as it is streamed.
struct TokenEvent {
  int64_t sequence = 0;  ///< index of the prompt in the batch
  int32_t token = 0;
  std::string text;      ///< new text ready to print (may be empty while a character or stop string is pending)
  bool last = false;     ///< the sequence's final token (eos, stop string or length): `text` holds all the rest
};
using TokenCallback = std::function<void(const TokenEvent&)>;

struct Generation {
  std::vector<int32_t> prompt_tokens;
  std::vector<int32_t> tokens;  ///< the generated tokens (eos included when it stopped the sequence)
  std::string text;             ///< the generated continuation (stop string and eos excluded); empty without tokenizer
  StopReason stop_reason = StopReason::kLength;
};

/// Timings of one generate call (prefill and decode synchronised with the device).
struct GenerationStats {
  int64_t batch_size = 0;
  int64_t prompt_tokens = 0;   ///< all prompts together
  int64_t decode_steps = 0;    ///< batched steps taken (each produces one token per sequence)
  int64_t generated_tokens = 0;  ///< tokens kept over all sequences
  double prefill_seconds = 0;
  double decode_seconds = 0;   ///< sampling of the first token included
  bool cuda_graph = false;     ///< whether the decode steps were graph replays
};

struct GenerateResult {
  std::vector<Generation> sequences;  ///< in the order of the prompts
  GenerationStats stats;
};

class Generator {
 public:
  /// The model is put in eval mode (and cast/moved as the options say). Without tokenizer only
  /// generate_tokens works, and eos comes from the model config. Throws GenerateError for invalid options
  /// or a tokenizer whose vocabulary differs from the model's.
  Generator(CausalLM model, std::optional<Tokenizer> tokenizer, GenerateOptions options = {});
  ~Generator();
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  /// Tokenizes and continues each prompt. Throws GenerateError for an empty prompt or one that tokenizes
  /// to nothing.
  GenerateResult generate(const std::vector<std::string>& prompts, const TokenCallback& on_token = {});
  /// The same from token ids (ids outside the vocabulary are an error).
  GenerateResult generate_tokens(const std::vector<std::vector<int32_t>>& prompts, const TokenCallback& on_token = {});

  const GenerateOptions& options() const { return options_; }
  CausalLM model() const { return model_; }

 private:
  struct Prefilled;
  Prefilled prefill(const std::vector<std::vector<int32_t>>& prompts);

  CausalLM model_;
  std::optional<Tokenizer> tokenizer_;
  GenerateOptions options_;
  /// Kept between calls: a captured graph is reused for the next batch of the same size.
  std::unique_ptr<BatchDecoder> decoder_;
};

/// A training checkpoint folder (model.json, model.pt, tokenizer.model) ready for generation.
struct Checkpoint {
  ModelConfig config;
  CausalLM model;
  Tokenizer tokenizer;
};

/// Reads a checkpoint folder written by densessm-train, or an output_dir / checkpoints folder (its newest
/// checkpoint). Throws GenerateError naming the missing or mismatching file (no config, no weights, no
/// tokenizer, tokenizer vocabulary != model vocabulary).
Checkpoint load_checkpoint(const std::string& path);

/// Parses "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16", "fp64"/"float64"; throws GenerateError.
torch::ScalarType parse_dtype(const std::string& name);

}  // namespace densessm
