#include <ATen/autocast_mode.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "densessm/convert.h"
#include "densessm/data_loader.h"
#include "densessm/log.h"
#include "densessm/model.h"
#include "densessm/train.h"
#include "json_reader.h"
#include "train/checkpoint.h"

namespace densessm {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::atomic<int> g_signal{0};
void on_signal(int signal) { g_signal.store(signal); }

// Catches SIGINT/SIGTERM for the duration of a run, restoring the previous handlers after.
class SignalGuard {
 public:
  SignalGuard() {
    g_signal.store(0);
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// Autocast to bf16/fp16 for the forward pass, as torch.autocast does.
class AutocastGuard {
 public:
  AutocastGuard(torch::DeviceType device, const std::string& precision) : device_(device), enabled_(precision != "fp32") {
    if (!enabled_) return;
    previous_ = at::autocast::is_autocast_enabled(device_);
    at::autocast::set_autocast_dtype(device_, precision == "bf16" ? torch::kBFloat16 : torch::kHalf);
    at::autocast::set_autocast_enabled(device_, true);
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    at::autocast::set_autocast_enabled(device_, previous_);
    at::autocast::clear_cache();
  }

 private:
  torch::DeviceType device_;
  bool enabled_, previous_ = false;
};

// Dynamic loss scaling for fp16: overflowed steps are skipped and halve the scale; the scale doubles after
// growth_interval good steps in a row.
struct LossScaler {
  double scale = 1;
  int64_t growth_interval = 2000, good_steps = 0, skipped_steps = 0;
  bool enabled = false;

  // Unscales the gradients; false (and a smaller scale) when any is not finite.
  bool unscale(const std::vector<torch::Tensor>& params) {
    if (!enabled) return true;
    torch::Tensor finite;  // accumulated on the device: one host sync per step, not one per tensor
    for (const auto& p : params) {
      if (!p.grad().defined()) continue;
      p.grad().div_(scale);
      auto ok = torch::isfinite(p.grad()).all();
      finite = finite.defined() ? finite.logical_and(ok) : ok;
    }
    if (finite.defined() && !finite.item<bool>()) {
      scale /= 2;
      good_steps = 0;
      ++skipped_steps;
      return false;
    }
    if (++good_steps % growth_interval == 0) scale *= 2;
    return true;
  }
};

std::string duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  char text[32];
  std::snprintf(text, sizeof(text), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return text;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out.flush()) throw std::runtime_error(path + ": write failed (disk full?)");
}

// The default random generator of a device (dropout draws from it), saved and restored with checkpoints.
torch::Tensor generator_state(torch::Device device) {
  at::Generator generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void restore_generator(torch::Device device, const torch::Tensor& state) {
  at::Generator generator = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

// Two configs describe the same parameters (name, dropout and retention chunk size aside).
bool same_shape(ModelConfig a, ModelConfig b) {
  a.dropout = b.dropout = 0;
  a.retention.chunk_size = b.retention.chunk_size = 0;
  a.name.clear();
  b.name.clear();
  return to_json(a) == to_json(b);
}

class Trainer {
 public:
  Trainer(const RunConfig& config, const TrainOptions& options)
      : c_(config), options_(options), device_(config.device), model_(nullptr) {
    if (device_.is_cuda() && !torch::cuda::is_available()) {
      throw std::runtime_error("device \"" + c_.device + "\": no CUDA device is available");
    }
    torch::manual_seed(c_.seed);
    model_ = CausalLM(c_.model);
    const bool resuming = options_.resume && latest_checkpoint(c_.output_dir);
    if (!c_.init_from.empty() && !resuming) initialise_from(c_.init_from);
    model_->to(device_);
    build_optimizer();
    LoaderOptions lo;
    lo.dataset_dir = c_.data;
    lo.batch_size = c_.batch_size;
    lo.block_size = c_.block_size;
    lo.seed = c_.seed;
    train_data_ = std::make_unique<DataLoader>(lo);
    if (train_data_->vocab_size() > c_.model.vocab_size) {
      throw std::runtime_error(c_.data + ": the data's vocabulary (" + std::to_string(train_data_->vocab_size()) +
                               " tokens) does not fit the model's " + std::to_string(c_.model.vocab_size));
    }
    if (c_.eval_every > 0) {
      lo.split = "validation";
      lo.shuffle = false;
      lo.prefetch = 0;
      try {
        validation_data_ = std::make_unique<DataLoader>(lo);
      } catch (const std::exception& e) {
        log::warn("no validation: ", e.what());
      }
    }
    scaler_.enabled = c_.precision == "fp16";
    scaler_.scale = scaler_.enabled ? c_.initial_loss_scale : 1.0;
    scaler_.growth_interval = c_.loss_scale_growth_interval;
    total_steps_ = c_.total_steps();
  }

  int64_t run() {
    fs::create_directories(c_.output_dir);
    if (options_.resume) resume();
    metrics_.open(c_.output_dir + "/metrics.jsonl", std::ios::app);
    if (!metrics_) throw std::runtime_error(c_.output_dir + "/metrics.jsonl: cannot open");
    log::info(c_.model.name.empty() ? "model" : c_.model.name, ": ", model_->num_parameters(), " parameters on ",
              c_.device, " (", c_.precision, "), ", total_steps_, " steps of ",
              c_.tokens_per_step(), " tokens",
              step_ > 0 ? ", resuming at step " + std::to_string(step_) : std::string());
    SignalGuard signals;
    const int64_t first = step_;
    const auto start = Clock::now();
    auto window_start = start;
    int64_t window_tokens = 0;
    while (step_ < total_steps_) {
      const auto [loss, grad_norm] = train_step();
      window_tokens += c_.tokens_per_step();
      if (step_ % c_.log_every == 0 || step_ == total_steps_) {
        const auto now = Clock::now();
        const double elapsed = std::chrono::duration<double>(now - start).count();
        const double rate = static_cast<double>(window_tokens) / std::chrono::duration<double>(now - window_start).count();
        const double eta = elapsed / static_cast<double>(step_ - first) * static_cast<double>(total_steps_ - step_);
        log::info("step ", step_, "/", total_steps_, " | loss ", fixed(loss, 4), " | lr ", scientific(lr_), " | grad ",
                  fixed(grad_norm, 3), " | ", static_cast<int64_t>(rate), " tok/s | elapsed ", duration(elapsed), " | eta ",
                  duration(eta), scaler_.enabled ? " | scale " + fixed(scaler_.scale, 0) : std::string());
        record({{"step", step_}, {"loss", loss}, {"lr", lr_}, {"grad_norm", grad_norm}, {"tokens_per_second", rate},
                {"tokens", tokens_}, {"skipped_steps", scaler_.skipped_steps}});
        window_start = now;
        window_tokens = 0;
      }
      if (validation_data_ && c_.eval_every > 0 && (step_ % c_.eval_every == 0 || step_ == total_steps_)) evaluate();
      const bool stop = g_signal.load() != 0 || (options_.stop_after > 0 && step_ - first >= options_.stop_after);
      if ((c_.checkpoint_every > 0 && step_ % c_.checkpoint_every == 0) || step_ == total_steps_ || stop) save();
      if (stop) {
        log::info(g_signal.load() ? "stopped by signal " + std::to_string(g_signal.load()) : std::string("stopped"),
                  " at step ", step_, "; continue with --resume");
        break;
      }
    }
    return step_;
  }

 private:
  static std::string fixed(double v, int digits) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.*f", digits, v);
    return text;
  }
  static std::string scientific(double v) {
    char text[32];
    std::snprintf(text, sizeof(text), "%.2e", v);
    return text;
  }

  void build_optimizer() {
    std::vector<torch::Tensor> decay, no_decay;
    for (const auto& item : model_->named_parameters()) {
      const bool exempt = item.value().dim() < 2 || item.key().find("A_log") != std::string::npos;
      (exempt ? no_decay : decay).push_back(item.value());
      parameters_.push_back(item.value());
    }
    const auto& o = c_.optimizer;
    auto options = torch::optim::AdamWOptions(o.lr).betas({o.beta1, o.beta2}).eps(o.eps).weight_decay(o.weight_decay);
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay, std::make_unique<torch::optim::AdamWOptions>(options));
    groups.emplace_back(no_decay, std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(options).weight_decay(0)));
    optimizer_ = std::make_unique<torch::optim::AdamW>(std::move(groups), options);
  }

  torch::Tensor loss_of(const torch::Tensor& batch, const ForwardOptions& forward) {
    auto tokens = batch.to(device_);
    auto inputs = tokens.narrow(1, 0, c_.block_size), targets = tokens.narrow(1, 1, c_.block_size);
    torch::Tensor logits;
    {
      AutocastGuard autocast(device_.type(), c_.precision);
      logits = model_->forward(inputs, nullptr, forward);  // (B, T, V)
    }
    return torch::nn::functional::cross_entropy(logits.to(torch::kFloat).flatten(0, 1), targets.flatten());
  }

  std::pair<double, double> train_step() {
    lr_ = c_.optimizer.lr * lr_factor(c_.schedule, step_, total_steps_);
    for (auto& group : optimizer_->param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr_);
    model_->train();
    optimizer_->zero_grad();
    ForwardOptions forward;
    forward.form = c_.form == "parallel" ? SequenceForm::kParallel : SequenceForm::kChunkwise;
    double loss_sum = 0;
    for (int64_t micro = 0; micro < c_.gradient_accumulation; ++micro) {
      auto loss = loss_of(train_data_->next(), forward) / static_cast<double>(c_.gradient_accumulation);
      (loss * scaler_.scale).backward();
      loss_sum += loss.item<double>();
    }
    double grad_norm = NAN;
    if (scaler_.unscale(parameters_)) {
      const double clip = c_.optimizer.grad_clip > 0 ? c_.optimizer.grad_clip : INFINITY;
      grad_norm = torch::nn::utils::clip_grad_norm_(parameters_, clip);
      optimizer_->step();
    }
    ++step_;
    tokens_ += c_.tokens_per_step();
    return {loss_sum, grad_norm};
  }

  void evaluate() {
    torch::NoGradGuard no_grad;
    model_->eval();
    validation_data_->set_position({0, 0});
    const int64_t batches = std::min<int64_t>(c_.eval_batches, static_cast<int64_t>(validation_data_->batches_per_epoch()));
    double total = 0;
    for (int64_t i = 0; i < batches; ++i) total += loss_of(validation_data_->next(), {}).item<double>();
    const double loss = total / static_cast<double>(batches);
    log::info("step ", step_, " | validation loss ", fixed(loss, 4), " | perplexity ", fixed(std::exp(loss), 2));
    record({{"step", step_}, {"validation_loss", loss}, {"validation_perplexity", std::exp(loss)}, {"tokens", tokens_}});
  }

  void record(const nlohmann::json& entry) {
    metrics_ << entry.dump() << "\n";
    metrics_.flush();
  }

  void save() {
    const auto position = train_data_->position();
    const std::string folder = write_checkpoint(c_.output_dir, step_, c_.keep_checkpoints, [&](const std::string& dir) {
      torch::save(model_, dir + "/model.pt");
      torch::save(*optimizer_, dir + "/optimizer.pt");
      torch::save(generator_state(torch::Device(torch::kCPU)), dir + "/rng-cpu.pt");
      if (device_.is_cuda()) torch::save(generator_state(device_), dir + "/rng-cuda.pt");
      const nlohmann::json state = {{"step", step_},
                                    {"tokens", tokens_},
                                    {"loss_scale", scaler_.scale},
                                    {"good_steps", scaler_.good_steps},
                                    {"skipped_steps", scaler_.skipped_steps},
                                    {"loader_epoch", position.epoch},
                                    {"loader_batch", position.batch}};
      write_text(dir + "/state.json", state.dump(2) + "\n");
      write_text(dir + "/model.json", to_json(c_.model) + "\n");
      write_text(dir + "/run.json", to_json(c_) + "\n");
    });
    log::info("checkpoint ", folder);
  }

  // Copies the weights of a model folder or checkpoint into the fresh model (float32 master weights).
  void initialise_from(const std::string& folder) {
    CausalLM source = load_model_folder(folder);
    if (!same_shape(source->config(), c_.model)) {
      throw std::runtime_error(c_.init_from + ": init_from holds another model shape than the run config's model:\n" +
                               to_json(source->config()));
    }
    torch::NoGradGuard no_grad;
    const auto weights = source->named_parameters();
    for (auto& item : model_->named_parameters()) item.value().copy_(weights[item.key()]);
    log::info("initialised from ", folder);
  }

  void resume() {
    const auto latest = latest_checkpoint(c_.output_dir);
    if (!latest) {
      log::info("no checkpoint in ", c_.output_dir, ": starting from scratch");
      return;
    }
    const std::string& dir = *latest;
    const ModelConfig saved = parse_model_config(json_config::read_config_file(dir + "/model.json", "checkpoint's model config"),
                                                 dir + "/model.json");
    if (!same_shape(saved, c_.model)) {
      throw std::runtime_error(dir + ": the checkpoint holds another model shape than the run config's model");
    }
    try {
      torch::load(model_, dir + "/model.pt");
      model_->to(device_);
      torch::load(*optimizer_, dir + "/optimizer.pt");
      torch::Tensor state;
      torch::load(state, dir + "/rng-cpu.pt");
      restore_generator(torch::Device(torch::kCPU), state);
      if (device_.is_cuda() && fs::exists(dir + "/rng-cuda.pt")) {
        torch::load(state, dir + "/rng-cuda.pt");
        restore_generator(device_, state);
      }
    } catch (const c10::Error& e) {
      throw std::runtime_error(dir + ": corrupt or truncated checkpoint: " + e.what_without_backtrace());
    }
    const nlohmann::json s = json_config::read_json_file(dir + "/state.json", "checkpoint's state");
    try {
      step_ = s.at("step").get<int64_t>();
      tokens_ = s.at("tokens").get<int64_t>();
      scaler_.scale = s.at("loss_scale").get<double>();
      scaler_.good_steps = s.at("good_steps").get<int64_t>();
      scaler_.skipped_steps = s.at("skipped_steps").get<int64_t>();
      train_data_->set_position({s.at("loader_epoch").get<uint64_t>(), s.at("loader_batch").get<uint64_t>()});
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(dir + "/state.json: corrupt: " + e.what());
    }
    log::info("resumed from ", dir);
  }

  RunConfig c_;
  TrainOptions options_;
  torch::Device device_;
  CausalLM model_;
  std::vector<torch::Tensor> parameters_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<DataLoader> train_data_, validation_data_;
  LossScaler scaler_;
  std::ofstream metrics_;
  int64_t step_ = 0, tokens_ = 0, total_steps_ = 0;
  double lr_ = 0;
};

}  // namespace

int64_t train(const RunConfig& config, const TrainOptions& options) { return Trainer(config, options).run(); }

}  // namespace densessm
