#include <cmath>
#include <filesystem>

#include "densessm/train.h"
#include "json_reader.h"

namespace densessm {
using json_config::json;
using json_config::ObjectReader;
using json_config::parse_json;

int64_t RunConfig::total_steps(int64_t world_size) const {
  if (max_steps > 0) return max_steps;
  return (max_tokens + tokens_per_step(world_size) - 1) / tokens_per_step(world_size);
}

RunConfig parse_run_config(const std::string& json_text, const std::string& source, const std::string& base_dir) {
  const json root = parse_json(json_text, source);
  RunConfig c;
  ObjectReader r(root, source, "");
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
  r.require("data");
  r.require("output_dir");
  r.read("data", c.data);
  r.read("output_dir", c.output_dir);
  r.read("init_from", c.init_from);
  for (std::string* p : {&c.data, &c.output_dir, &c.init_from}) {
    if (p->empty()) continue;
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
  r.read("distributed_timeout_s", c.distributed_timeout_s);
  r.read("shard_optimizer", c.shard_optimizer);
  {
    ObjectReader ro = r.child("optimizer");
    ro.read("lr", c.optimizer.lr);
    ro.read("beta1", c.optimizer.beta1);
    ro.read("beta2", c.optimizer.beta2);
    ro.read("eps", c.optimizer.eps);
    ro.read("weight_decay", c.optimizer.weight_decay);
    ro.read("grad_clip", c.optimizer.grad_clip);
    ro.finish();
  }
  {
    ObjectReader rs = r.child("schedule");
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
  check(c.init_from.empty() || std::filesystem::is_directory(c.init_from), "init_from",
        "\"" + c.init_from + "\" is not a folder (expected a model folder from densessm-convert import or a checkpoint)");
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
  check(c.distributed_timeout_s > 0, "distributed_timeout_s", "must be positive (seconds)");
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
  return parse_run_config(json_config::read_config_file(path, "run config"), path,
                          std::filesystem::path(path).parent_path().string());
}

std::string to_json(const RunConfig& c) {
  json out = {
      {"model", json::parse(to_json(c.model))},
      {"data", c.data},
      {"output_dir", c.output_dir},
      {"init_from", c.init_from},
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
      {"distributed_timeout_s", c.distributed_timeout_s},
      {"shard_optimizer", c.shard_optimizer},
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
