// Builds a model from a config, runs a forward pass and decodes a few tokens greedily through the
// recurrent state, checking that decoding reproduces the forward pass.
#include <filesystem>
#include <iostream>

#include <torch/torch.h>

#include <densessm/config.h>
#include <densessm/log.h>
#include <densessm/model.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer CONFIG.json\n";
    return 2;
  }
  try {
    torch::manual_seed(0);
    torch::NoGradGuard no_grad;
    densessm::CausalLM model(densessm::load_model_config(argv[1]));
    model->eval();
    auto prompt = torch::randint(0, model->config().vocab_size, {2, 5}, torch::kLong);
    auto logits = model->forward(prompt);  // (2, 5, V)
    densessm::DecodeState state = model->initial_state(2);
    model->forward(prompt.narrow(1, 0, 4), &state);
    auto last = model->step(prompt.select(1, 4), state);  // (2, V)
    const double error = (last - logits.select(1, 4)).abs().max().item<double>();
    densessm::log::info("consumer: ", model->num_parameters(), " parameters, logits ", logits.sizes(),
                        ", decode vs forward max difference ", error);
    std::cout << "greedy next tokens: " << last.argmax(-1) << "\n";
    // std::filesystem must be libstdc++'s, not the copy LibTorch's wheel exports (DenseSSM's link options).
    const auto scratch = std::filesystem::temp_directory_path() / "densessm-consumer-scratch";
    std::filesystem::create_directories(scratch / "nested");
    std::filesystem::remove_all(scratch);
    return error < 1e-4 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    return 1;
  }
}
