#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "densessm/train.h"

namespace densessm {
namespace {

using nlohmann::json;

// Reads one object's keys into fields, rejecting unknown keys and wrong types with "<source>: <key>: why".
class Reader {
 public:
  Reader(const json& object, std::string source, std::string prefix)
      : object_(object), source_(std::move(source)), prefix_(std::move(prefix)) {
    if (!object_.is_object()) fail(prefix_.empty() ? "<root>" : prefix_, "expected a JSON object");
  }
  [[noreturn]] void fail(const std::string& key, const std::string& reason) const {
    throw ConfigError(source_ + ": " + key + ": " + reason);
  }
  std::string path(const std::string& key) const { return prefix_.empty() ? key : prefix_ + "." + key; }
  const json* take(const std::string& key) {
    auto it = object_.find(key);
    if (it == object_.end()) return nullptr;
    used_.push_back(key);
    return &*it;
  }
  template <typename T>
  void read(const std::string& key, T& out) {
    const json* v = take(key);
    if (!v) return;
    if constexpr (std::is_same_v<T, std::string>) {
      if (!v->is_string()) fail(path(key), "expected a string, got " + v->dump());
    } else if constexpr (std::is_same_v<T, double>) {
      if (!v->is_number()) fail(path(key), "expected a number, got " + v->dump());
    } else {
      if (!v->is_number_integer()) fail(path(key), "expected an integer, got " + v->dump());
      if constexpr (std::is_unsigned_v<T>) {
        if (v->get<int64_t>() < 0) fail(path(key), "must not be negative");
      }
    }
    out = v->get<T>();
  }
  void finish() const {
    for (auto it = object_.begin(); it != object_.end(); ++it) {
      if (std::find(used_.begin(), used_.end(), it.key()) == used_.end()) fail(path(it.key()), "unknown key");
    }
  }

 private:
  json object_;
  std::string source_, prefix_;
  std::vector<std::string> used_;
};

}  // namespace

int64_t RunConfig::total_steps() const {
  if (max_steps > 0) return max_steps;
  const int64_t per_step = batch_size * gradient_accumulation * block_size;
  return (max_tokens + per_step - 1) / per_step;
}

RunConfig parse_run_config(const std::string& json_text, const std::string& source, const std::string& base_dir) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw ConfigError(source + ": malformed JSON: " + e.what());
  }
  RunConfig c;
  Reader r(root, source, "");
  const json* model = r.take("model");
  if (!model) r.fail("model", "is required: a model config file or an embedded model object");
  if (model->is_string()) {
    std::filesystem::path p = model->get<std::string>();
    if (p.is_relative()) p = std::filesystem::path(base_dir) / p;
    c.model_source = p.string();
    c.model = load_model_config(c.model_source);
  } else if (model->is_object()) {
    c.model_source = "(embedded)";
    c.model = parse_model_config(model->dump(), source + ": model");
  } else {
    r.fail("model", "expected a file name or an object");
  }
  for (const char* key : {"data", "output_dir"}) {
    if (!root.contains(key)) r.fail(key, "is required");
  }
  r.read("data", c.data);
  r.read("output_dir", c.output_dir);
  for (std::string* p : {&c.data, &c.output_dir}) {
    if (std::filesystem::path(*p).is_relative()) *p = (std::filesystem::path(base_dir) / *p).lexically_normal().string();
  }
  r.read("device", c.device);
  r.read("precision", c.precision);
  r.read("form", c.form);
  r.read("seed", c.seed);
  r.read("batch_size", c.batch_size);
  r.read("gradient_accumulation", c.gradient_accumulation);
  r.read("block_size", c.block_size);
  r.read("max_steps", c.max_steps);
  r.read("max_tokens", c.max_tokens);
  r.read("dropout", c.dropout);
  r.read("log_every", c.log_every);
  r.read("eval_every", c.eval_every);
  r.read("eval_batches", c.eval_batches);
  r.read("checkpoint_every", c.checkpoint_every);
  r.read("keep_checkpoints", c.keep_checkpoints);
  r.read("initial_loss_scale", c.initial_loss_scale);
  r.read("loss_scale_growth_interval", c.loss_scale_growth_interval);
  if (const json* o = r.take("optimizer")) {
    Reader ro(*o, source, "optimizer");
    ro.read("lr", c.optimizer.lr);
    ro.read("beta1", c.optimizer.beta1);
    ro.read("beta2", c.optimizer.beta2);
    ro.read("eps", c.optimizer.eps);
    ro.read("weight_decay", c.optimizer.weight_decay);
    ro.read("grad_clip", c.optimizer.grad_clip);
    ro.finish();
  }
  if (const json* s = r.take("schedule")) {
    Reader rs(*s, source, "schedule");
    rs.read("type", c.schedule.type);
    rs.read("warmup_ratio", c.schedule.warmup_ratio);
    rs.read("final_lr_ratio", c.schedule.final_lr_ratio);
    rs.read("power", c.schedule.power);
    rs.finish();
  }
  r.finish();

  auto check = [&](bool ok, const std::string& key, const std::string& why) {
    if (!ok) r.fail(key, why);
  };
  check(c.device == "cpu" || c.device.rfind("cuda", 0) == 0, "device", "must be cpu, cuda or cuda:N, got \"" + c.device + "\"");
  check(c.precision == "fp32" || c.precision == "bf16" || c.precision == "fp16", "precision", "must be fp32, bf16 or fp16");
  check(c.form == "chunkwise" || c.form == "parallel", "form", "must be chunkwise or parallel");
  check(c.batch_size > 0, "batch_size", "must be positive");
  check(c.gradient_accumulation > 0, "gradient_accumulation", "must be positive");
  check(c.block_size > 0, "block_size", "must be positive");
  check(c.max_steps >= 0 && c.max_tokens >= 0, c.max_steps < 0 ? "max_steps" : "max_tokens", "must not be negative");
  check(c.max_steps > 0 || c.max_tokens > 0, "max_steps", "set max_steps or max_tokens to a positive number");
  check(c.dropout < 1, "dropout", "must be below 1");
  check(c.log_every > 0, "log_every", "must be positive");
  check(c.eval_every >= 0 && c.eval_batches > 0, c.eval_every < 0 ? "eval_every" : "eval_batches", "out of range");
  check(c.checkpoint_every >= 0, "checkpoint_every", "must not be negative (0: only at the end)");
  check(c.keep_checkpoints > 0, "keep_checkpoints", "must be positive");
  check(c.initial_loss_scale > 0 && c.loss_scale_growth_interval > 0, "initial_loss_scale", "loss scaling values must be positive");
  check(c.optimizer.lr > 0, "optimizer.lr", "must be positive");
  check(c.optimizer.beta1 >= 0 && c.optimizer.beta1 < 1, "optimizer.beta1", "must be in [0, 1)");
  check(c.optimizer.beta2 >= 0 && c.optimizer.beta2 < 1, "optimizer.beta2", "must be in [0, 1)");
  check(c.optimizer.eps > 0, "optimizer.eps", "must be positive");
  check(c.optimizer.weight_decay >= 0, "optimizer.weight_decay", "must not be negative");
  check(c.optimizer.grad_clip >= 0, "optimizer.grad_clip", "must not be negative (0 disables)");
  check(c.schedule.type == "polynomial" || c.schedule.type == "cosine" || c.schedule.type == "constant", "schedule.type",
        "must be polynomial, cosine or constant, got \"" + c.schedule.type + "\"");
  check(c.schedule.warmup_ratio >= 0 && c.schedule.warmup_ratio < 1, "schedule.warmup_ratio", "must be in [0, 1)");
  check(c.schedule.final_lr_ratio >= 0 && c.schedule.final_lr_ratio <= 1, "schedule.final_lr_ratio", "must be in [0, 1]");
  check(c.schedule.power > 0, "schedule.power", "must be positive");
  if (c.dropout >= 0) c.model.dropout = c.dropout;
  return c;
}

RunConfig load_run_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open the run config");
  std::stringstream text;
  text << in.rdbuf();
  return parse_run_config(text.str(), path, std::filesystem::path(path).parent_path().string());
}

std::string to_json(const RunConfig& c) {
  json out = {
      {"model", json::parse(to_json(c.model))},
      {"data", c.data},
      {"output_dir", c.output_dir},
      {"device", c.device},
      {"precision", c.precision},
      {"form", c.form},
      {"seed", c.seed},
      {"batch_size", c.batch_size},
      {"gradient_accumulation", c.gradient_accumulation},
      {"block_size", c.block_size},
      {"max_steps", c.max_steps},
      {"max_tokens", c.max_tokens},
      {"log_every", c.log_every},
      {"eval_every", c.eval_every},
      {"eval_batches", c.eval_batches},
      {"checkpoint_every", c.checkpoint_every},
      {"keep_checkpoints", c.keep_checkpoints},
      {"initial_loss_scale", c.initial_loss_scale},
      {"loss_scale_growth_interval", c.loss_scale_growth_interval},
      {"optimizer", {{"lr", c.optimizer.lr}, {"beta1", c.optimizer.beta1}, {"beta2", c.optimizer.beta2},
                     {"eps", c.optimizer.eps}, {"weight_decay", c.optimizer.weight_decay},
                     {"grad_clip", c.optimizer.grad_clip}}},
      {"schedule", {{"type", c.schedule.type}, {"warmup_ratio", c.schedule.warmup_ratio},
                    {"final_lr_ratio", c.schedule.final_lr_ratio}, {"power", c.schedule.power}}},
  };
  return out.dump(2);
}

double lr_factor(const ScheduleConfig& s, int64_t step, int64_t total) {
  const auto warmup = static_cast<int64_t>(std::ceil(s.warmup_ratio * static_cast<double>(total)));
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (s.type == "constant") return 1.0;
  const double span = static_cast<double>(std::max<int64_t>(1, total - warmup));
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  const double end = s.final_lr_ratio;
  if (s.type == "cosine") return end + (1 - end) * 0.5 * (1 + std::cos(M_PI * progress));
  return end + (1 - end) * std::pow(1 - progress, s.power);
}

}  // namespace densessm
