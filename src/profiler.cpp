#include "densessm/profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iomanip>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>

namespace densessm {

namespace kineto = torch::autograd::profiler;
using torch::profiler::impl::ActivityType;
using torch::profiler::impl::ProfilerConfig;
using torch::profiler::impl::ProfilerState;

struct Profile::Impl {
  bool cuda = false;
  bool recording = false;
  std::chrono::steady_clock::time_point start;
};

Profile::Profile(bool cuda) : impl_(std::make_unique<Impl>()) {
  if (cuda && !torch::cuda::is_available()) throw std::runtime_error("profile: no CUDA device is available");
  if (kineto::profilerEnabled()) throw std::runtime_error("profile: another profile is already recording");
  impl_->cuda = cuda;
  std::set<ActivityType> activities{ActivityType::CPU};
  if (cuda) activities.insert(ActivityType::CUDA);
  const ProfilerConfig config(ProfilerState::KINETO);
  kineto::prepareProfiler(config, activities);
  if (cuda) torch::cuda::synchronize();
  impl_->start = std::chrono::steady_clock::now();
  kineto::enableProfiler(config, activities);
  impl_->recording = true;
}

Profile::~Profile() {
  if (impl_ && impl_->recording) {
    try {
      kineto::disableProfiler();
    } catch (...) {  // a destructor must not throw; the profile is discarded anyway
    }
  }
}

ProfileSummary Profile::stop(const std::string& trace_path) {
  if (!impl_->recording) throw std::runtime_error("profile: stop() was already called");
  if (impl_->cuda) torch::cuda::synchronize();
  ProfileSummary summary;
  summary.cuda = impl_->cuda;
  summary.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - impl_->start).count();
  impl_->recording = false;
  auto result = kineto::disableProfiler();

  std::map<std::string, ProfileRow> rows;
  // CPU operators: the top-level ones (no enclosing operator on their thread) make the busy time.
  struct Span {
    uint64_t start, end;
  };
  std::map<uint64_t, std::vector<Span>> cpu_by_thread;
  for (const auto& e : result->events()) {
    const bool device = e.deviceType() == c10::DeviceType::CUDA;
    if (device != summary.cuda) continue;
    auto& row = rows[e.name()];
    row.name = e.name();
    row.calls += 1;
    row.total_ms += static_cast<double>(e.durationNs()) / 1e6;
    if (device) {
      summary.busy_ms += static_cast<double>(e.durationNs()) / 1e6;
    } else {
      cpu_by_thread[e.startThreadId()].push_back({e.startNs(), e.endNs()});
    }
  }
  for (auto& [thread, spans] : cpu_by_thread) {
    std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.start < b.start; });
    uint64_t covered_until = 0;
    for (const Span& s : spans) {
      if (s.start >= covered_until) {
        summary.busy_ms += static_cast<double>(s.end - s.start) / 1e6;
        covered_until = s.end;
      }
    }
  }
  for (auto& [name, row] : rows) summary.rows.push_back(row);
  std::sort(summary.rows.begin(), summary.rows.end(),
            [](const ProfileRow& a, const ProfileRow& b) { return a.total_ms > b.total_ms; });

  if (!trace_path.empty()) {
    const std::filesystem::path path(trace_path);
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
    const std::string temporary = trace_path + ".tmp";
    try {
      result->save(temporary);
    } catch (const std::exception& e) {
      std::remove(temporary.c_str());
      throw std::runtime_error("profile: cannot write the trace " + temporary + ": " + e.what());
    }
    std::error_code error;
    std::filesystem::rename(temporary, path, error);
    if (error) throw std::runtime_error("profile: cannot rename " + temporary + " to " + trace_path + ": " + error.message());
  }
  return summary;
}

std::string format_profile(const ProfileSummary& s, int top, int repeats) {
  repeats = std::max(repeats, 1);
  std::ostringstream out;
  out << std::fixed << std::setprecision(3);
  out << "profile (" << (s.cuda ? "CUDA kernels, copies and fills" : "CPU operators, nested ones included")
      << ", " << repeats << " repeat(s)): wall " << s.wall_ms / repeats << " ms, " << (s.cuda ? "device busy " : "operators ")
      << s.busy_ms / repeats << " ms per repeat";
  if (s.cuda && s.wall_ms > 0) out << " (" << std::setprecision(1) << 100.0 * s.busy_ms / s.wall_ms << "% busy)";
  out << "\n" << std::setprecision(3);
  out << "   ms/repeat   share  calls/repeat  name\n";
  const double base = s.busy_ms > 0 ? s.busy_ms : 1;
  int shown = 0;
  for (const auto& row : s.rows) {
    if (shown++ == top) break;
    std::string name = row.name.size() > 110 ? row.name.substr(0, 107) + "..." : row.name;
    out << std::setw(12) << row.total_ms / repeats << std::setw(7) << std::setprecision(1)
        << 100.0 * row.total_ms / base << "%" << std::setw(14) << std::setprecision(1)
        << static_cast<double>(row.calls) / repeats << "  " << name << "\n"
        << std::setprecision(3);
  }
  if (static_cast<int>(s.rows.size()) > top) out << "  (" << s.rows.size() - top << " more)\n";
  return out.str();
}

}  // namespace densessm
