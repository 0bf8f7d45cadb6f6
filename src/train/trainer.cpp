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
#include "train/device_memory.h"
#include "train/distributed.h"
#include "train/lm_loss.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"
#include "train/tensorboard.h"

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

// The tokenizer .model named by the dataset's manifest, copied into every checkpoint so that a checkpoint
// alone can generate; empty (with a warning) when the manifest names none that exists.
std::string dataset_tokenizer(const std::string& data_dir) {
  const nlohmann::json manifest = json_config::read_json_file(data_dir + "/dataset.json", "dataset manifest");
  const std::string path = manifest.value("tokenizer", std::string());
  if (path.empty() || !fs::is_regular_file(path)) {
    log::warn(data_dir, "/dataset.json: its tokenizer '", path, "' is not there; checkpoints will lack tokenizer.model");
    return {};
  }
  return path;
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
      : c_(config),
        options_(options),
        env_(distributed::Environment::from_process()),
        device_(distributed::device_of_rank(config.device, env_)),
        model_(nullptr) {
    if (device_.is_cuda() && !torch::cuda::is_available()) {
      throw std::runtime_error("device \"" + c_.device + "\": no CUDA device is available");
    }
    if (env_.enabled()) {
      group_ = std::make_unique<distributed::ProcessGroup>(env_, device_, std::chrono::seconds(c_.distributed_timeout_s));
    }
    memory_ = std::make_unique<DeviceMemory>(device_);
    torch::manual_seed(c_.seed);
    model_ = CausalLM(c_.model);
    const bool resuming = options_.resume && latest_checkpoint(c_.output_dir);
    if (!c_.init_from.empty() && !resuming) initialise_from(c_.init_from);
    model_->to(device_);
    parameters_ = model_->parameters();
    if (group_ && c_.shard_optimizer) {
      shard_optimizer();
    } else {
      if (c_.shard_optimizer) log::info("shard_optimizer: a single process holds the whole optimizer state");
      optimizer_ = make_adamw(model_->named_parameters(), c_.optimizer);
    }
    if (group_) {
      std::vector<torch::Tensor> state = parameters_;
      for (const auto& buffer : model_->buffers()) state.push_back(buffer);
      group_->broadcast_from_first(state);
      reducer_ = std::make_unique<distributed::GradientReducer>(*group_, parameters_, kBucketBytes);
    }
    LoaderOptions lo;
    lo.rank = env_.rank;
    lo.world_size = env_.world_size;
    lo.dataset_dir = c_.data;
    lo.batch_size = c_.batch_size;
    lo.block_size = c_.block_size;
    lo.seed = c_.seed;
    train_data_ = std::make_unique<DataLoader>(lo);
    tokenizer_path_ = dataset_tokenizer(c_.data);
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
    if (c_.precision == "fp16") scaler_ = LossScaler(c_.initial_loss_scale, c_.loss_scale_growth_interval);
    total_steps_ = c_.total_steps(env_.world_size);
  }

  int64_t run() {
    fs::create_directories(c_.output_dir);
    if (options_.resume) resume();
    if (env_.rank == 0) {  // the other ranks' results are rank 0's (the metrics are averaged over the ranks)
      metrics_.open(c_.output_dir + "/metrics.jsonl", std::ios::app);
      if (!metrics_) throw std::runtime_error(c_.output_dir + "/metrics.jsonl: cannot open");
      tensorboard_ = std::make_unique<TensorBoardWriter>(c_.output_dir + "/tensorboard");
    }
    log::info(c_.model.name.empty() ? "model" : c_.model.name, ": ", model_->num_parameters(), " parameters on ",
              device_, " (", c_.precision, "), ", total_steps_, " steps of ", c_.tokens_per_step(env_.world_size),
              " tokens", env_.enabled() ? " over " + std::to_string(env_.world_size) + " ranks" : std::string(),
              step_ > 0 ? ", resuming at step " + std::to_string(step_) : std::string());
    SignalGuard signals;
    const int64_t first = step_;
    const auto start = Clock::now();
    auto window_start = start;
    int64_t window_tokens = 0;
    while (step_ < total_steps_) {
      auto [loss, grad_norm] = train_step();
      window_tokens += c_.tokens_per_step(env_.world_size);
      if (step_ % c_.log_every == 0 || step_ == total_steps_) {
        if (group_) loss = group_->average(loss);
        const auto now = Clock::now();
        const double elapsed = std::chrono::duration<double>(now - start).count();
        const double rate = static_cast<double>(window_tokens) / std::chrono::duration<double>(now - window_start).count();
        const double eta = elapsed / static_cast<double>(step_ - first) * static_cast<double>(total_steps_ - step_);
        // CUDA: this rank's peak of allocated memory so far (the caching allocator's count).
        const double peak_gib = memory_->peak_allocated_and_reserved().first / (1024.0 * 1024 * 1024);
        log::info("step ", step_, "/", total_steps_, " | loss ", fixed(loss, 4), " | lr ", scientific(lr_), " | grad ",
                  fixed(grad_norm, 3), " | ", static_cast<int64_t>(rate), " tok/s | elapsed ", duration(elapsed), " | eta ",
                  duration(eta), scaler_.enabled() ? " | scale " + fixed(scaler_.scale(), 0) : std::string(),
                  device_.is_cuda() ? " | peak " + fixed(peak_gib, 1) + " GiB" : std::string());
        nlohmann::json entry = {{"step", step_}, {"loss", loss}, {"lr", lr_}, {"grad_norm", grad_norm},
                                {"tokens_per_second", rate}, {"tokens", tokens_}, {"loss_scale", scaler_.scale()},
                                {"skipped_steps", scaler_.skipped_steps()}};
        if (device_.is_cuda()) entry["peak_memory_gib"] = peak_gib;
        record(entry);
        window_start = now;
        window_tokens = 0;
      }
      if (validation_data_ && c_.eval_every > 0 && (step_ % c_.eval_every == 0 || step_ == total_steps_)) evaluate();
      bool stop = g_signal.load() != 0 || (options_.stop_after > 0 && step_ - first >= options_.stop_after);
      if (group_) stop = group_->any(stop);  // all ranks stop after the same step
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

  torch::Tensor loss_of(const torch::Tensor& batch, const ForwardOptions& forward) {
    return next_token_loss(model_, batch.to(device_), c_.precision, forward);
  }

  std::pair<double, double> train_step() {
    lr_ = c_.optimizer.lr * lr_factor(c_.schedule, step_, total_steps_);
    set_learning_rate(*optimizer_, lr_);
    model_->train();
    model_->zero_grad();  // every gradient: a sharded optimizer covers only this rank's parameters
    ForwardOptions forward;
    forward.form = c_.form == "parallel" ? SequenceForm::kParallel : SequenceForm::kChunkwise;
    double loss_sum = 0;
    for (int64_t micro = 0; micro < c_.gradient_accumulation; ++micro) {
      auto loss = loss_of(train_data_->next(), forward) / static_cast<double>(c_.gradient_accumulation);
      if (reducer_ && micro == c_.gradient_accumulation - 1) reducer_->arm();
      (loss * scaler_.scale()).backward();
      loss_sum += loss.item<double>();
    }
    // From here on every rank holds the same averaged gradients, so clipping and the fp16 overflow
    // decision (an overflow on any rank makes the sum non-finite everywhere) agree without more messages.
    if (reducer_) reducer_->finish();
    double grad_norm = NAN;
    if (scaler_.unscale(parameters_)) {
      const double clip = c_.optimizer.grad_clip > 0 ? c_.optimizer.grad_clip : INFINITY;
      grad_norm = torch::nn::utils::clip_grad_norm_(parameters_, clip);
      optimizer_->step();
      if (sharded()) distributed::share_updated_parameters(*group_, parameters_, owner_);
    }
    ++step_;
    tokens_ += c_.tokens_per_step(env_.world_size);
    return {loss_sum, grad_norm};
  }

  void evaluate() {
    torch::NoGradGuard no_grad;
    model_->eval();
    validation_data_->set_position({0, 0});
    const int64_t batches = std::min<int64_t>(c_.eval_batches, static_cast<int64_t>(validation_data_->batches_per_epoch()));
    double total = 0;
    for (int64_t i = 0; i < batches; ++i) total += loss_of(validation_data_->next(), {}).item<double>();
    double loss = total / static_cast<double>(batches);
    if (group_) loss = group_->average(loss);  // each rank evaluated its own part of the global batches
    log::info("step ", step_, " | validation loss ", fixed(loss, 4), " | perplexity ", fixed(std::exp(loss), 2));
    record({{"step", step_}, {"validation_loss", loss}, {"validation_perplexity", std::exp(loss)}, {"tokens", tokens_}});
  }

  // One line of metrics.jsonl, and the same values as TensorBoard scalars: "validation_loss" is shown as
  // "validation/loss", the others under "train/".
  void record(const nlohmann::json& entry) {
    if (!metrics_.is_open()) return;
    metrics_ << entry.dump() << "\n";
    metrics_.flush();
    for (const auto& [key, value] : entry.items()) {
      if (key == "step" || key == "tokens") continue;
      const bool validation = key.rfind("validation_", 0) == 0;
      tensorboard_->add_scalar(validation ? "validation/" + key.substr(11) : "train/" + key, value.get<double>(), step_);
    }
    tensorboard_->flush();
  }

  // Rank 0 writes (every rank holds the same model, optimizer and generator states; a sharded optimizer's
  // state is first gathered there); the others wait.
  void save() {
    const auto whole = sharded() ? gather_optimizer() : nullptr;
    if (env_.rank == 0) write_state(whole ? *whole : *optimizer_);
    if (group_) group_->barrier();
  }

  bool sharded() const { return !owner_.empty(); }

  // ZeRO stage 1: this rank's AdamW covers the parameters partition_by_size gives it; the others' state
  // lives on their ranks. Gradients are still all-reduced whole, so clipping sees the global norm.
  void shard_optimizer() {
    std::vector<int64_t> sizes;
    for (const auto& p : parameters_) {
      if (p.scalar_type() != parameters_.front().scalar_type()) {
        throw std::runtime_error("shard_optimizer: the parameters must share one dtype");
      }
      sizes.push_back(p.numel());
    }
    if (static_cast<int64_t>(sizes.size()) < env_.world_size) {
      throw std::runtime_error("shard_optimizer: " + std::to_string(env_.world_size) + " ranks but only " +
                               std::to_string(sizes.size()) + " parameter tensors to share out");
    }
    owner_ = distributed::partition_by_size(sizes, env_.world_size);
    torch::OrderedDict<std::string, torch::Tensor> mine;
    int64_t mine_elements = 0, all_elements = 0;
    size_t i = 0;
    for (const auto& item : model_->named_parameters()) {
      all_elements += item.value().numel();
      if (owner_[i++] == env_.rank) {
        mine.insert(item.key(), item.value());
        mine_elements += item.value().numel();
      }
    }
    optimizer_ = make_adamw(mine, c_.optimizer);
    const double bytes = 2.0 * static_cast<double>(parameters_.front().element_size());  // AdamW: exp_avg, exp_avg_sq
    log::info("shard_optimizer: this rank keeps the AdamW state of ", mine.size(), " of ", parameters_.size(),
              " parameter tensors (", fixed(bytes * static_cast<double>(mine_elements) / 1048576.0, 1), " MiB instead of ",
              fixed(bytes * static_cast<double>(all_elements) / 1048576.0, 1), " MiB)");
  }

  // The whole AdamW state on rank 0 (null elsewhere), gathered from the ranks that own it, parameter by
  // parameter: the file a sharded run writes is the one an unsharded run writes. Other ranks' tensors wait
  // in host memory, so gathering needs no more device memory than one parameter's state.
  std::unique_ptr<torch::optim::AdamW> gather_optimizer() {
    std::unique_ptr<torch::optim::AdamW> whole;
    if (env_.rank == 0) {
      whole = make_adamw(model_->named_parameters(), c_.optimizer);
      set_learning_rate(*whole, lr_);
    }
    const std::string what = "gathering the sharded optimizer state";
    auto& mine = optimizer_->state();
    for (size_t i = 0; i < parameters_.size(); ++i) {
      const auto& p = parameters_[i];
      void* key = p.unsafeGetTensorImpl();
      const bool owned = owner_[i] == env_.rank;
      const auto found = owned ? mine.find(key) : mine.end();
      const auto* st = found != mine.end() ? &static_cast<const torch::optim::AdamWParamState&>(*found->second) : nullptr;
      // (has state, step) from the owner; a parameter without gradients yet has no state.
      auto header = torch::zeros({2}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
      if (st) header.copy_(torch::tensor({1.0, static_cast<double>(st->step())}, torch::kDouble));
      group_->broadcast({header}, owner_[i], what);
      const auto values = header.cpu();
      if (values[0].item<double>() == 0) continue;
      torch::Tensor exp_avg, exp_avg_sq;
      if (st) {
        exp_avg = st->exp_avg();
        exp_avg_sq = st->exp_avg_sq();
      } else {
        exp_avg = torch::empty_like(p);
        exp_avg_sq = torch::empty_like(p);
      }
      group_->broadcast({exp_avg, exp_avg_sq}, owner_[i], what);
      if (!whole) continue;
      if (!owned) {  // kept in host memory, so that the device never holds more than one other rank's tensor
        exp_avg = exp_avg.cpu();
        exp_avg_sq = exp_avg_sq.cpu();
      }
      auto gathered = std::make_unique<torch::optim::AdamWParamState>();
      gathered->step(static_cast<int64_t>(values[1].item<double>()));
      gathered->exp_avg(exp_avg);
      gathered->exp_avg_sq(exp_avg_sq);
      whole->state()[key] = std::move(gathered);
    }
    return whole;
  }

  // Reads optimizer.pt (always the whole state) into this rank's optimizer: all of it, or its shard.
  void load_optimizer(const std::string& path) {
    if (!sharded()) {
      torch::load(*optimizer_, path, device_);
      return;
    }
    auto whole = make_adamw(model_->named_parameters(), c_.optimizer);
    torch::load(*whole, path, device_);
    auto& mine = optimizer_->state();
    for (size_t i = 0; i < parameters_.size(); ++i) {
      if (owner_[i] != env_.rank) continue;
      const auto found = whole->state().find(parameters_[i].unsafeGetTensorImpl());
      if (found != whole->state().end()) mine[found->first] = std::move(found->second);
    }
  }

  void write_state(torch::optim::AdamW& optimizer) {
    const auto position = train_data_->position();
    const std::string folder = write_checkpoint(c_.output_dir, step_, c_.keep_checkpoints, [&](const std::string& dir) {
      save_checked(model_, dir + "/model.pt");
      save_checked(optimizer, dir + "/optimizer.pt");
      save_checked(generator_state(torch::Device(torch::kCPU)), dir + "/rng-cpu.pt");
      if (device_.is_cuda()) save_checked(generator_state(device_), dir + "/rng-cuda.pt");
      const nlohmann::json state = {{"step", step_},
                                    {"tokens", tokens_},
                                    {"loss_scale", scaler_.scale()},
                                    {"good_steps", scaler_.good_steps()},
                                    {"skipped_steps", scaler_.skipped_steps()},
                                    {"world_size", env_.world_size},
                                    {"batch_size", c_.batch_size},
                                    {"loader_epoch", position.epoch},
                                    {"loader_batch", position.batch}};
      write_text(dir + "/state.json", state.dump(2) + "\n");
      write_text(dir + "/model.json", to_json(c_.model) + "\n");
      write_text(dir + "/run.json", to_json(c_) + "\n");
      if (!tokenizer_path_.empty()) fs::copy_file(tokenizer_path_, dir + "/tokenizer.model");
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
    verify_checkpoint(dir);
    try {
      // Onto this rank's device directly: rank 0 saved them from its own (cuda:0 in a multi-GPU run).
      torch::load(model_, dir + "/model.pt", device_);
      model_->to(device_);
      load_optimizer(dir + "/optimizer.pt");
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
      scaler_.restore(s.at("loss_scale").get<double>(), s.at("good_steps").get<int64_t>(),
                      s.at("skipped_steps").get<int64_t>());
      check_global_batch(dir, s.value("world_size", int64_t{1}), s.value("batch_size", c_.batch_size));
      train_data_->set_position({s.at("loader_epoch").get<uint64_t>(), s.at("loader_batch").get<uint64_t>()});
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(dir + "/state.json: corrupt: " + e.what());
    }
    log::info("resumed from ", dir);
  }

  // The loader's position counts global batches of world_size x batch_size blocks, so a checkpoint
  // continues exactly under another world size as long as that product stays the same.
  void check_global_batch(const std::string& dir, int64_t saved_world_size, int64_t saved_batch_size) const {
    if (saved_world_size * saved_batch_size == env_.world_size * c_.batch_size) return;
    throw std::runtime_error(dir + ": written by " + std::to_string(saved_world_size) + " rank(s) x batch_size " +
                             std::to_string(saved_batch_size) + "; this run has " + std::to_string(env_.world_size) +
                             " x " + std::to_string(c_.batch_size) + ". Keep world size x batch_size equal (" +
                             std::to_string(saved_world_size * saved_batch_size) + ") to resume");
  }

  static constexpr int64_t kBucketBytes = 25 << 20;  // PyTorch DDP's default bucket size

  RunConfig c_;
  TrainOptions options_;
  distributed::Environment env_;
  torch::Device device_;
  CausalLM model_;
  std::vector<torch::Tensor> parameters_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;  // all parameters, or this rank's shard (owner_)
  std::vector<int64_t> owner_;  // with shard_optimizer: the rank that updates each of parameters_; else empty
  std::unique_ptr<DataLoader> train_data_, validation_data_;
  std::unique_ptr<distributed::ProcessGroup> group_;  // null in a single-process run
  std::unique_ptr<distributed::GradientReducer> reducer_;
  std::unique_ptr<DeviceMemory> memory_;
  LossScaler scaler_;
  std::string tokenizer_path_;
  std::ofstream metrics_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  int64_t step_ = 0, tokens_ = 0, total_steps_ = 0;
  double lr_ = 0;
};

}  // namespace

int64_t train(const RunConfig& config, const TrainOptions& options) { return Trainer(config, options).run(); }

}  // namespace densessm
