// Validation and names of the generation options.
#include <cmath>

#include "densessm/generate.h"

namespace densessm {

void validate(const GenerateOptions& o) {
  auto fail = [](const std::string& message) { throw GenerateError(message); };
  if (o.max_new_tokens < 1) fail("max new tokens must be at least 1, got " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    fail("temperature must be >= 0 (0 is greedy), got " + std::to_string(o.temperature));
  }
  if (o.top_k < 0) fail("top-k must be >= 0 (0 keeps all tokens), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0 && o.top_p <= 1)) fail("top-p must be in (0, 1], got " + std::to_string(o.top_p));
  if (!(o.repetition_penalty > 0) || !std::isfinite(o.repetition_penalty)) {
    fail("repetition penalty must be > 0 (1 is none), got " + std::to_string(o.repetition_penalty));
  }
  for (const std::string& stop : o.stop_strings) {
    if (stop.empty()) fail("a stop string is empty");
  }
}

std::string to_string(StopReason reason) {
  switch (reason) {
    case StopReason::kLength: return "length";
    case StopReason::kEos: return "eos";
    case StopReason::kStopString: return "stop string";
  }
  return "?";
}

torch::ScalarType parse_dtype(const std::string& name) {
  if (name == "fp32" || name == "float32") return torch::kFloat;
  if (name == "bf16" || name == "bfloat16") return torch::kBFloat16;
  if (name == "fp16" || name == "float16") return torch::kHalf;
  if (name == "fp64" || name == "float64") return torch::kDouble;
  throw GenerateError("unknown dtype '" + name + "' (fp32, bf16, fp16 or fp64)");
}

}  // namespace densessm
