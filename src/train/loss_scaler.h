// Dynamic loss scaling for fp16 training: the loss is multiplied by a large scale before backward so that
// small gradients do not underflow in fp16; the gradients are divided by it again before the step. A step
// whose gradients overflowed (inf or NaN) is skipped and halves the scale; growth_interval good steps in
// a row double it. Disabled (bf16, fp32), the scale is 1 and no step is skipped.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace densessm {

class LossScaler {
 public:
  LossScaler() = default;  ///< disabled
  LossScaler(double initial_scale, int64_t growth_interval);

  bool enabled() const { return enabled_; }
  double scale() const { return scale_; }
  int64_t good_steps() const { return good_steps_; }
  int64_t skipped_steps() const { return skipped_steps_; }

  /// Divides the parameters' gradients by the scale. Returns false when any gradient is not finite: the
  /// caller skips the optimizer step, and the scale has halved and the skip been counted.
  bool unscale(const std::vector<torch::Tensor>& parameters);

  /// The state saved in a checkpoint, put back on resume.
  void restore(double scale, int64_t good_steps, int64_t skipped_steps);

 private:
  bool enabled_ = false;
  double scale_ = 1;
  int64_t growth_interval_ = 1;
  int64_t good_steps_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace densessm
