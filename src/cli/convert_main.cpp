// densessm-convert: move models between Hugging Face layouts (safetensors) and our model folders, and
// compute logits for parity checks against the Python implementations.
#include <chrono>
#include <filesystem>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "densessm/convert.h"
#include "densessm/generate.h"  // parse_dtype
#include "densessm/log.h"
#include "io/npy.h"
#include "json_reader.h"

namespace {

using namespace densessm;

const char* kFormats = "hf-mamba (transformers' MambaForCausalLM) or hf-dense-retnet (the reference DenseRetNet code)";

void run_import(const std::string& format, const std::string& input, const std::string& output, const std::string& dtype,
                std::string tokenizer, bool replace) {
  const auto start = std::chrono::steady_clock::now();
  CausalLM model = import_model(parse_external_format(format), input, parse_dtype(dtype));
  // The reference's folders carry LLaMA's sentencepiece model; transformers' Mamba folders have none.
  const auto beside = std::filesystem::path(input) / "tokenizer.model";
  if (tokenizer.empty() && std::filesystem::is_regular_file(beside)) tokenizer = beside.string();
  save_model_folder(model, output, replace, tokenizer);
  if (tokenizer.empty()) log::info("no tokenizer.model copied: pass --tokenizer to generate text from this folder");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log::info("imported ", input, " (", format, ", ", to_string(model->config().architecture),
            model->config().dense() ? " with dense connections over " + std::to_string(model->config().dense_block_layers) + " layers" : "",
            ", ", model->num_parameters(), " parameters, ", dtype, ") into ", output, " in ", seconds, " s");
}

void run_export(const std::string& format, const std::string& input, const std::string& output, const std::string& dtype,
                uint64_t shard_bytes, bool replace) {
  CausalLM model = load_model_folder(input);
  ExportOptions options;
  options.dtype = parse_dtype(dtype);
  options.shard_bytes = shard_bytes;
  options.replace = replace;
  export_model(parse_external_format(format), model, output, options);
  log::info("exported ", input, " (", model->num_parameters(), " parameters) as ", format, " ", dtype, " into ", output);
}

// tokens: a JSON array of equally long arrays of token ids, (B, T).
torch::Tensor read_tokens(const std::string& path) {
  const auto rows = json_config::read_json_file(path, "token file");
  if (!rows.is_array() || rows.empty() || !rows[0].is_array() || rows[0].empty()) {
    throw std::runtime_error(path + ": expected a JSON array of non-empty arrays of token ids");
  }
  const auto B = static_cast<int64_t>(rows.size()), T = static_cast<int64_t>(rows[0].size());
  auto tokens = torch::empty({B, T}, torch::kLong);  // (B, T)
  for (int64_t b = 0; b < B; ++b) {
    if (!rows[b].is_array() || static_cast<int64_t>(rows[b].size()) != T) {
      throw std::runtime_error(path + ": row " + std::to_string(b) + " is not an array of " + std::to_string(T) + " token ids");
    }
    for (int64_t t = 0; t < T; ++t) {
      if (!rows[b][t].is_number_integer()) throw std::runtime_error(path + ": row " + std::to_string(b) + ": not an integer token id");
      tokens[b][t] = rows[b][t].get<int64_t>();
    }
  }
  return tokens;
}

void run_eval(const std::string& checkpoint, const std::string& tokens_path, const std::string& output,
              const std::string& form, const std::string& device) {
  CausalLM model = load_model_folder(checkpoint);
  model->to(torch::Device(device));
  model->eval();
  const auto tokens = read_tokens(tokens_path).to(torch::Device(device));
  ForwardOptions options;
  if (form == "parallel") options.form = SequenceForm::kParallel;
  if (form == "chunkwise") options.form = SequenceForm::kChunkwise;
  torch::NoGradGuard no_grad;
  torch::Tensor logits;  // (B, T, V)
  if (form == "recurrent") {
    // Token by token through CausalLM::step, as decoding runs.
    auto state = model->initial_state(tokens.size(0));
    std::vector<torch::Tensor> steps;
    for (int64_t t = 0; t < tokens.size(1); ++t) steps.push_back(model->step(tokens.select(1, t), state));
    logits = torch::stack(steps, 1);
  } else {
    logits = model->forward(tokens, nullptr, options);
  }
  // float64 models (for parity in float64) keep their precision; the others are written as float32.
  write_npy(output, logits.scalar_type() == torch::kDouble ? logits : logits.to(torch::kFloat));
  log::info("logits ", logits.sizes(), " (", form, ", ", device, ") written to ", output);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"densessm-convert: import Hugging Face checkpoints (safetensors) into model folders, export them back, "
               "and compute logits for parity checks"};
  app.require_subcommand(1);

  std::string format, input, output, dtype = "fp32", form = "chunkwise", device = "cpu", tokens, tokenizer;
  bool replace = false;
  uint64_t shard_bytes = 0;

  auto* import_cmd = app.add_subcommand("import", "Hugging Face folder (config.json + safetensors) -> model folder (model.json + model.pt)");
  import_cmd->add_option("--format", format, kFormats)->required()->check(CLI::IsMember(std::vector<std::string>{"hf-mamba", "hf-dense-retnet"}));
  import_cmd->add_option("--input", input, "folder with config.json and model.safetensors (or shards and model.safetensors.index.json)")
      ->required()->check(CLI::ExistingDirectory);
  import_cmd->add_option("--output", output, "model folder to create: usable as densessm-train's init_from and by densessm-generate")->required();
  import_cmd->add_option("--dtype", dtype, "dtype of the imported model: fp32 (default), fp16, bf16 or fp64")
      ->check(CLI::IsMember(std::vector<std::string>{"fp32", "fp16", "bf16", "fp64"}));
  import_cmd->add_option("--tokenizer", tokenizer, "sentencepiece model to copy in as tokenizer.model (default: the input's tokenizer.model, if any)")
      ->check(CLI::ExistingFile);
  import_cmd->add_flag("--replace", replace, "replace an existing output folder (once the new one is complete)");

  auto* export_cmd = app.add_subcommand("export", "model folder or training checkpoint -> Hugging Face folder");
  export_cmd->add_option("--format", format, kFormats)->required()->check(CLI::IsMember(std::vector<std::string>{"hf-mamba", "hf-dense-retnet"}));
  export_cmd->add_option("--input", input, "model folder, checkpoint folder (step-N) or training output_dir (its newest checkpoint)")
      ->required()->check(CLI::ExistingDirectory);
  export_cmd->add_option("--output", output, "folder to create with config.json and model.safetensors")->required();
  export_cmd->add_option("--dtype", dtype, "stored dtype: fp32 (default), fp16 or bf16")->check(CLI::IsMember(std::vector<std::string>{"fp32", "fp16", "bf16"}));
  export_cmd->add_option("--shard-size", shard_bytes, "split into shards of at most this many bytes, with model.safetensors.index.json (0: one file)");
  export_cmd->add_flag("--replace", replace, "replace an existing output folder (once the new one is complete)");

  auto* eval_cmd = app.add_subcommand("eval", "logits of a model folder on given tokens, as a .npy (B, T, V): float32, float64 for fp64 models");
  eval_cmd->add_option("--checkpoint", input, "model folder or checkpoint")->required()->check(CLI::ExistingDirectory);
  eval_cmd->add_option("--tokens", tokens, "JSON file: an array of B arrays of T token ids")->required()->check(CLI::ExistingFile);
  eval_cmd->add_option("--output", output, ".npy file to write")->required();
  eval_cmd->add_option("--form", form, "parallel, chunkwise (default) or recurrent (token by token through step)")
      ->check(CLI::IsMember(std::vector<std::string>{"parallel", "chunkwise", "recurrent"}));
  eval_cmd->add_option("--device", device, "cpu (default), cuda or cuda:N");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*import_cmd) run_import(format, input, output, dtype, tokenizer, replace);
    if (*export_cmd) run_export(format, input, output, dtype, shard_bytes, replace);
    if (*eval_cmd) run_eval(input, tokens, output, form, device);
  } catch (const c10::Error& e) {
    std::cerr << "densessm-convert: error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "densessm-convert: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
