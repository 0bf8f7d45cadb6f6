// Checkpoint folders: <output_dir>/checkpoints/step-<N>/ with model.pt, optimizer.pt, rng-*.pt,
// state.json, model.json and run.json. A checkpoint is written into a temporary folder, every file
// fsync'ed, then renamed into place, so a crash or a full disk never leaves a half checkpoint under a
// final name, and older checkpoints stay intact.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace densessm {

/// The folder of the newest complete checkpoint in output_dir, if any.
std::optional<std::string> latest_checkpoint(const std::string& output_dir);

/// Runs `write(temp_folder)`, fsyncs what it wrote and renames the folder to step-<step>; then keeps only
/// the newest `keep` checkpoints. Returns the final folder. On failure the temporary folder is removed and
/// the error rethrown.
std::string write_checkpoint(const std::string& output_dir, int64_t step, int64_t keep,
                             const std::function<void(const std::string& folder)>& write);

}  // namespace densessm
