// densessm-train: pretrain a DenseRetNet / DenseMamba (or plain) model from a JSON run config.
#include <iostream>

#include <CLI/CLI.hpp>

#include "densessm/log.h"
#include "densessm/train.h"

int main(int argc, char** argv) {
  CLI::App app{"densessm-train: pretrain a model described by a JSON run config (see configs/train-*.json)"};
  std::string config_path;
  densessm::TrainOptions options;
  app.add_option("--config", config_path, "run config JSON")->required();
  app.add_flag("--resume", options.resume, "continue from the latest checkpoint in the run's output_dir");
  app.add_option("--stop-after", options.stop_after, "stop with a checkpoint after this many steps of this invocation")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    const densessm::RunConfig config = densessm::load_run_config(config_path);
    densessm::train(config, options);
  } catch (const std::exception& e) {
    std::cerr << "densessm-train: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
