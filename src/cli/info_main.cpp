// densessm-info: what a model configuration describes (sizes, parameter counts), without training it.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "densessm/config.h"
#include "densessm/model.h"

namespace {

std::string millions(int64_t n) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f M", static_cast<double>(n) / 1e6);
  return text;
}

void print_config(const std::string& path, bool build) {
  const densessm::ModelConfig c = densessm::load_model_config(path);
  const densessm::ParameterCount n = densessm::count_parameters(c);
  const char* kind = c.architecture == densessm::Architecture::kRetNet ? (c.dense() ? "DenseRetNet" : "RetNet")
                                                                        : (c.dense() ? "DenseMamba" : "Mamba");
  std::cout << path << (c.name.empty() ? "" : " (" + c.name + ")") << "\n"
            << "  model            " << kind << ", " << c.num_layers << " layers, hidden " << c.hidden_size
            << ", vocab " << c.vocab_size << ", dense_block_layers " << c.dense_block_layers << "\n";
  if (c.architecture == densessm::Architecture::kRetNet) {
    std::cout << "  retention        K " << c.retention.query_key_dim << ", E " << c.value_dim() << ", heads "
              << c.retention.num_heads << " (dk " << c.head_qk_dim() << ", dv " << c.head_v_dim() << "), chunk "
              << c.retention.chunk_size << "\n";
  } else {
    std::cout << "  mamba            d_inner " << c.d_inner() << ", d_state " << c.mamba.d_state << ", dt_rank "
              << c.dt_rank() << ", d_conv " << c.mamba.d_conv << "\n";
  }
  std::cout << "  parameters       " << n.total << " (" << millions(n.total) << ")\n"
            << "    embeddings     " << n.embeddings << (c.tie_embeddings ? " (tied to lm_head)" : "") << "\n"
            << "    lm_head        " << n.lm_head << "\n"
            << "    per layer      " << n.per_layer << " (dense part " << n.dense_per_layer << ")\n"
            << "    layers         " << c.num_layers * n.per_layer << "\n"
            << "    final norm     " << n.final_norm << "\n";
  if (build) {
    torch::NoGradGuard no_grad;
    densessm::CausalLM model(c);
    const int64_t built = model->num_parameters();
    std::cout << "  built model      " << built << " parameters" << (built == n.total ? " (matches)" : " (MISMATCH)")
              << "\n";
    if (built != n.total) throw std::runtime_error("the built model's parameter count differs from the formula");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"densessm-info: sizes and parameter counts of DenseSSM model configurations"};
  std::vector<std::string> configs;
  bool build = false;
  app.add_option("--config,configs", configs, "model configuration JSON file(s)")->required()->check(CLI::ExistingFile);
  app.add_flag("--build", build, "also build each model (random weights, CPU) and check its parameter count");
  CLI11_PARSE(app, argc, argv);
  try {
    for (const auto& path : configs) print_config(path, build);
  } catch (const std::exception& e) {
    std::cerr << "densessm-info: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
