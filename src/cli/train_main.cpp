// densessm-train: pretrain a DenseRetNet / DenseMamba (or plain) model from a JSON run config.
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>

#include "densessm/log.h"
#include "densessm/train.h"
#include "launcher.h"

namespace {

// argv without the launcher's own option, for the processes it starts.
std::vector<std::string> rank_arguments(int argc, char** argv) {
  std::vector<std::string> result;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc-per-node") {
      ++i;
    } else if (a.rfind("--nproc-per-node=", 0) != 0) {
      result.push_back(a);
    }
  }
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"densessm-train: pretrain a model described by a JSON run config (see configs/train-*.json)"};
  std::string config_path;
  densessm::TrainOptions options;
  int nproc_per_node = 0;
  app.add_option("--config", config_path, "run config JSON")->required();
  app.add_flag("--resume", options.resume, "continue from the latest checkpoint in the run's output_dir");
  app.add_option("--stop-after", options.stop_after, "stop with a checkpoint after this many steps of this invocation")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--nproc-per-node", nproc_per_node,
                 "start this many processes here, one rank each (one GPU each for a CUDA device), as torchrun does")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    if (nproc_per_node > 0) return densessm::cli::launch_local(nproc_per_node, rank_arguments(argc, argv), 30);
    // Ranks other than 0 repeat rank 0's progress lines; their warnings and errors still show.
    const char* rank = std::getenv("RANK");
    if (rank && std::atoi(rank) > 0) densessm::log::set_level(densessm::log::Level::kWarn);
    const densessm::RunConfig config = densessm::load_run_config(config_path);
    densessm::train(config, options);
  } catch (const std::exception& e) {
    std::cerr << "densessm-train: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
