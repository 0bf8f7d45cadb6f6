#include "launcher.h"

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace densessm::cli {
namespace {

volatile sig_atomic_t g_forward = 0;
void on_signal(int signal) { g_forward = signal; }

// A port nobody listens on now (the kernel's choice); rank 0 binds it moments later.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("--nproc-per-node: socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  ::close(fd);
  if (!ok) throw std::runtime_error(std::string("--nproc-per-node: no free port: ") + std::strerror(errno));
  return ntohs(address.sin_port);
}

std::string variable(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value && *value ? value : fallback;
}

// The environment of local rank `rank`: ours, with torchrun's variables replaced.
std::vector<std::string> rank_environment(int rank, int nproc, const std::string& addr, const std::string& port) {
  const std::vector<std::pair<std::string, std::string>> job = {
      {"RANK", std::to_string(rank)},        {"LOCAL_RANK", std::to_string(rank)},
      {"WORLD_SIZE", std::to_string(nproc)}, {"LOCAL_WORLD_SIZE", std::to_string(nproc)},
      {"MASTER_ADDR", addr},                 {"MASTER_PORT", port},
      // As torchrun: N processes sharing the cores must not each start a thread per core.
      {"OMP_NUM_THREADS", variable("OMP_NUM_THREADS", "1")}};
  std::vector<std::string> result;
  for (char** entry = environ; *entry; ++entry) {
    const std::string text = *entry;
    bool replaced = false;
    for (const auto& [name, value] : job) replaced = replaced || text.rfind(name + "=", 0) == 0;
    if (!replaced) result.push_back(text);
  }
  for (const auto& [name, value] : job) result.push_back(name + "=" + value);
  return result;
}

std::vector<char*> pointers(std::vector<std::string>& strings) {
  std::vector<char*> result;
  for (auto& s : strings) result.push_back(s.data());
  result.push_back(nullptr);
  return result;
}

int exit_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status); }

}  // namespace

int launch_local(int nproc, const std::vector<std::string>& arguments, int grace_seconds) {
  if (std::atoi(variable("WORLD_SIZE", "1").c_str()) > 1) {
    throw std::runtime_error("--nproc-per-node: WORLD_SIZE is already set: this process is already one rank of a job");
  }
  const std::string addr = variable("MASTER_ADDR", "127.0.0.1");
  std::string port = variable("MASTER_PORT", "");
  if (port.empty()) port = std::to_string(free_port());
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);

  std::vector<std::string> argv = arguments;
  std::vector<pid_t> pids;
  for (int rank = 0; rank < nproc; ++rank) {
    // Everything the child needs is built before fork: between fork and exec it only calls execve.
    std::vector<std::string> environment = rank_environment(rank, nproc, addr, port);
    std::vector<char*> argv_pointers = pointers(argv), environment_pointers = pointers(environment);
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("--nproc-per-node: fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::execve("/proc/self/exe", argv_pointers.data(), environment_pointers.data());
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  std::cerr << "densessm-train: started " << nproc << " ranks (rendezvous at " << addr << ":" << port << ")\n";

  auto signal_all = [&](int signal) {
    for (pid_t pid : pids) {
      if (pid > 0) ::kill(pid, signal);
    }
  };
  int result = 0;
  int alive = nproc;
  std::chrono::steady_clock::time_point kill_at = std::chrono::steady_clock::time_point::max();
  while (alive > 0) {
    if (const int signal = g_forward) {
      g_forward = 0;
      signal_all(signal);
    }
    int status = 0;
    const pid_t done = ::waitpid(-1, &status, WNOHANG);
    if (done > 0) {
      for (auto& pid : pids) {
        if (pid != done) continue;
        const int rank = static_cast<int>(&pid - pids.data());
        pid = 0;
        --alive;
        if (exit_code(status) != 0 && result == 0) {
          result = exit_code(status);
          std::cerr << "densessm-train: rank " << rank << " failed (exit status " << result << "); stopping the others\n";
          signal_all(SIGTERM);
          kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(grace_seconds);
        }
      }
      continue;
    }
    if (std::chrono::steady_clock::now() > kill_at) signal_all(SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return result;
}

}  // namespace densessm::cli
