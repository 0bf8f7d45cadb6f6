// The Generator: prompts -> prefill (chunkwise, grouped by prompt length) -> batched decode loop -> results.
#include <chrono>
#include <map>

#include <torch/torch.h>

#include "densessm/generate.h"
#include "generate/batch_decoder.h"
#include "generate/device.h"
#include "generate/text_stream.h"

namespace densessm {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

torch::Device device_of(const CausalLM& model) { return model->parameters().front().device(); }

}  // namespace

struct Generator::Prefilled {
  DecodeState state;    // after each prompt
  torch::Tensor last;   // (B, V) logits after each prompt
  torch::Tensor seen;   // (B, V) bool: the prompt's tokens
};

Generator::Generator(CausalLM model, std::optional<Tokenizer> tokenizer, GenerateOptions options)
    : model_(std::move(model)), tokenizer_(std::move(tokenizer)), options_(std::move(options)) {
  validate(options_);
  if (tokenizer_ && tokenizer_->vocab_size() != model_->config().vocab_size) {
    throw GenerateError("the tokenizer " + tokenizer_->path() + " has " + std::to_string(tokenizer_->vocab_size()) +
                        " pieces but the model's vocabulary has " + std::to_string(model_->config().vocab_size));
  }
  if (options_.dtype) model_->to(*options_.dtype);
  if (options_.device) model_->to(*options_.device);
  model_->eval();
}

Generator::~Generator() = default;

GenerateResult Generator::generate(const std::vector<std::string>& prompts, const TokenCallback& on_token) {
  if (!tokenizer_) throw GenerateError("generating from text needs a tokenizer");
  std::vector<std::vector<int32_t>> ids;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const std::string where = "prompt " + std::to_string(i + 1);
    if (prompts[i].empty()) throw GenerateError(where + " is empty");
    ids.push_back(tokenizer_->encode(prompts[i]));
    if (ids.back().empty()) throw GenerateError(where + " ('" + prompts[i] + "') tokenizes to nothing");
    if (options_.add_bos) {
      if (tokenizer_->bos_id() < 0) throw GenerateError("add bos: the tokenizer has no bos piece");
      ids.back().insert(ids.back().begin(), tokenizer_->bos_id());
    }
  }
  return generate_tokens(ids, on_token);
}

Generator::Prefilled Generator::prefill(const std::vector<std::vector<int32_t>>& prompts) {
  const torch::Device device = device_of(model_);
  const int64_t B = static_cast<int64_t>(prompts.size()), V = model_->config().vocab_size;
  // Prompts of one length go through the model together; their states are then put back in prompt order.
  std::map<size_t, std::vector<int64_t>> by_length;
  for (int64_t i = 0; i < B; ++i) by_length[prompts[i].size()].push_back(i);
  std::vector<DecodeState> states;
  std::vector<torch::Tensor> lasts;
  std::vector<int64_t> order;  // prompt index of each row of the concatenation
  for (const auto& [length, members] : by_length) {
    std::vector<int64_t> flat;
    for (int64_t i : members) flat.insert(flat.end(), prompts[i].begin(), prompts[i].end());
    auto tokens = torch::tensor(flat, torch::kLong).view({static_cast<int64_t>(members.size()), -1}).to(device);
    DecodeState state = model_->initial_state(tokens.size(0));
    ForwardOptions prefill;
    prefill.last_logits_only = true;
    lasts.push_back(model_->forward(tokens, &state, prefill).select(1, 0));  // (b, V)
    states.push_back(std::move(state));
    order.insert(order.end(), members.begin(), members.end());
  }
  std::vector<int64_t> row_of(B);
  for (int64_t row = 0; row < B; ++row) row_of[order[row]] = row;
  const auto rows = torch::tensor(row_of, torch::kLong).to(device);
  Prefilled out;
  out.state = DecodeState::concat(states).select(rows);
  out.last = torch::cat(lasts, 0).index_select(0, rows);
  std::vector<int64_t> seen_rows, seen_tokens;
  for (int64_t i = 0; i < B; ++i) {
    seen_rows.insert(seen_rows.end(), prompts[i].size(), i);
    seen_tokens.insert(seen_tokens.end(), prompts[i].begin(), prompts[i].end());
  }
  out.seen = torch::zeros({B, V}, torch::TensorOptions().dtype(torch::kBool).device(device));  // (B, V)
  out.seen.index_put_({torch::tensor(seen_rows).to(device), torch::tensor(seen_tokens).to(device)}, true);
  return out;
}

GenerateResult Generator::generate_tokens(const std::vector<std::vector<int32_t>>& prompts,
                                          const TokenCallback& on_token) {
  if (prompts.empty()) throw GenerateError("no prompts");
  const int64_t V = model_->config().vocab_size;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i].empty()) throw GenerateError("prompt " + std::to_string(i + 1) + " has no tokens");
    for (int32_t id : prompts[i]) {
      if (id < 0 || id >= V) {
        throw GenerateError("prompt " + std::to_string(i + 1) + ": token id " + std::to_string(id) +
                            " is outside the vocabulary [0, " + std::to_string(V) + ")");
      }
    }
  }
  torch::NoGradGuard no_grad;
  const torch::Device device = device_of(model_);
  const int64_t B = static_cast<int64_t>(prompts.size()), max_new = options_.max_new_tokens;
  GenerateResult result;
  result.sequences.resize(B);
  GenerationStats& stats = result.stats;
  stats.batch_size = B;
  for (int64_t i = 0; i < B; ++i) {
    result.sequences[i].prompt_tokens = prompts[i];
    stats.prompt_tokens += static_cast<int64_t>(prompts[i].size());
  }

  synchronize(device);
  auto start = Clock::now();
  Prefilled prefilled = prefill(prompts);
  synchronize(device);
  stats.prefill_seconds = seconds_since(start);

  start = Clock::now();
  if (!decoder_ || decoder_->batch_size() != B) {
    SamplingParams params{options_.temperature, options_.top_k, options_.top_p, options_.repetition_penalty};
    decoder_ = std::make_unique<BatchDecoder>(model_, params, B, options_.cuda_graph);
  }
  stats.cuda_graph = decoder_->uses_cuda_graph();
  const int64_t eos = !options_.stop_at_eos ? -1
                      : tokenizer_      ? tokenizer_->eos_id()
                                        : model_->config().eos_token_id;
  // The host reads each step's tokens only when it must: to stream them or to see a sequence end.
  const bool read_each_step = on_token || eos >= 0 || !options_.stop_strings.empty();
  std::vector<std::unique_ptr<TextStream>> streams(B);
  if (tokenizer_ && read_each_step) {
    for (int64_t i = 0; i < B; ++i) streams[i] = std::make_unique<TextStream>(*tokenizer_, prompts[i], options_.stop_strings);
  }
  std::vector<bool> finished(B, false);
  int64_t running = B;
  torch::Tensor history;  // (B, max_new): the tokens kept on the device when the host does not read each step
  if (!read_each_step) history = torch::empty({B, max_new}, torch::TensorOptions().dtype(torch::kLong).device(device));
  torch::Tensor tokens = decoder_->start(prefilled.state, prefilled.seen, prefilled.last, options_.seed);  // (B)
  int64_t steps = 0;
  for (; steps < max_new && running > 0;) {
    if (!read_each_step) history.select(1, steps).copy_(tokens);
    ++steps;
    if (read_each_step) {
      const auto ids = tokens.to(torch::kCPU);
      const auto id = ids.accessor<int64_t, 1>();
      for (int64_t i = 0; i < B; ++i) {
        if (finished[i]) continue;
        Generation& g = result.sequences[i];
        const auto token = static_cast<int32_t>(id[i]);
        g.tokens.push_back(token);
        TokenEvent event{i, token, {}, false};
        if (token == eos) {
          g.stop_reason = StopReason::kEos;
          event.last = true;
        } else if (streams[i]) {
          event.text = streams[i]->push(token);
          if (streams[i]->stopped()) {
            g.stop_reason = StopReason::kStopString;
            event.last = true;
          }
        }
        if (steps == max_new) event.last = true;
        if (event.last) {
          if (streams[i]) event.text += streams[i]->finish();
          finished[i] = true;
          --running;
        }
        if (on_token) on_token(event);
      }
    }
    if (steps < max_new && running > 0) tokens = decoder_->next(tokens);
  }
  synchronize(device);
  stats.decode_seconds = seconds_since(start);
  stats.decode_steps = steps;

  if (!read_each_step) {
    const auto all = history.narrow(1, 0, steps).to(torch::kCPU).contiguous();  // (B, steps)
    for (int64_t i = 0; i < B; ++i) {
      const int64_t* row = all.data_ptr<int64_t>() + i * steps;
      result.sequences[i].tokens.assign(row, row + steps);
    }
  }
  for (int64_t i = 0; i < B; ++i) {
    Generation& g = result.sequences[i];
    stats.generated_tokens += static_cast<int64_t>(g.tokens.size());
    if (streams[i]) {
      g.text = streams[i]->text();
    } else if (tokenizer_) {
      g.text = decode_continuation(*tokenizer_, g.prompt_tokens, g.tokens);
    }
  }
  return result;
}

}  // namespace densessm
