// Where the time of a stretch of work goes, through LibTorch's profiler (Kineto: operators on the CPU,
// and on CUDA every kernel, copy and fill the device ran, through CUPTI). Used by `densessm-train
// --benchmark --profile DIR` and `densessm-generate --benchmark --profile DIR`; usable around any code.
//
//   densessm::Profile profile(/*cuda=*/true);
//   for (int i = 0; i < 3; ++i) step();
//   auto summary = profile.stop("step.trace.json");   // Chrome trace: chrome://tracing or ui.perfetto.dev
//   std::cout << densessm::format_profile(summary, /*top=*/25, /*repeats=*/3);
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace densessm {

struct ProfileRow {
  std::string name;  ///< kernel (CUDA) or operator (CPU) name
  int64_t calls = 0;
  double total_ms = 0;
};

struct ProfileSummary {
  bool cuda = false;
  double wall_ms = 0;  ///< from the start of recording to stop(), the device synchronised
  /// CUDA: the summed time of the device's kernels, copies and fills (busy time, if they did not overlap);
  /// the rest of wall_ms the device waited for the host. CPU: the summed time of the top-level operators.
  double busy_ms = 0;
  /// By total time, longest first. CUDA: device activities. CPU: every operator, nested ones included (an
  /// operator's time contains the operators it calls).
  std::vector<ProfileRow> rows;
};

/// Records from construction to stop(). One at a time per process (LibTorch's profiler is global).
class Profile {
 public:
  /// cuda: also record the device's activities (needs a CUDA build and device).
  explicit Profile(bool cuda);
  ~Profile();  ///< stops recording if stop() was not called
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  /// Stops recording and summarises. With `trace_path`, also writes the Chrome trace there (through a
  /// temporary file and a rename). Throws std::runtime_error if the trace cannot be written.
  ProfileSummary stop(const std::string& trace_path = "");

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// A table of the `top` longest rows, each with its share of busy_ms and its time per repeat (the work
/// recorded was `repeats` repetitions of the same thing, e.g. steps), after one line of wall and busy times.
std::string format_profile(const ProfileSummary& summary, int top, int repeats);

}  // namespace densessm
