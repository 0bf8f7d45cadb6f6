// Builds a model from a config, runs a forward pass and decodes a few tokens greedily through the
// recurrent state, checking that decoding reproduces the forward pass; then generates a few tokens with
// the library's Generator, streamed through a callback.
#include <filesystem>
#include <iostream>

#include <torch/torch.h>

#include <densessm/config.h>
#include <densessm/generate.h>
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

    densessm::GenerateOptions options;
    options.max_new_tokens = 5;
    options.temperature = 0;  // greedy
    options.stop_at_eos = false;
    densessm::Generator generator(model, std::nullopt, options);
    const auto row = prompt[0].to(torch::kInt).contiguous();
    const std::vector<int32_t> ids(row.data_ptr<int32_t>(), row.data_ptr<int32_t>() + row.numel());
    std::cout << "generated:";
    const auto result = generator.generate_tokens({ids}, [](const densessm::TokenEvent& e) { std::cout << " " << e.token; });
    std::cout << "\n";
    const bool same_first = result.sequences[0].tokens.at(0) == last[0].argmax().item<int64_t>();
    // std::filesystem must be libstdc++'s, not the copy LibTorch's wheel exports (DenseSSM's link options).
    const auto scratch = std::filesystem::temp_directory_path() / "densessm-consumer-scratch";
    std::filesystem::create_directories(scratch / "nested");
    std::filesystem::remove_all(scratch);
    return error < 1e-4 && same_first ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "consumer: " << e.what() << "\n";
    return 1;
  }
}
