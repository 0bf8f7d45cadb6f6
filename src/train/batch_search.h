// The search for the largest batch that fits on the device, apart from the device so that it can be
// tested: doubling from 1 until a batch does not fit, then bisecting between the last batch that fit and
// the first that did not. About 2 log2(answer) attempts.
#pragma once

#include <cstdint>
#include <functional>

namespace densessm {

/// Calls fits(batch) for each batch tried, in order; returns the largest that fit, 0 when none did.
inline int64_t largest_fitting_batch(const std::function<bool(int64_t batch)>& fits) {
  int64_t fit = 0, fail = 0;
  for (int64_t batch = 1; fail == 0; batch *= 2) (fits(batch) ? fit : fail) = batch;
  while (fail - fit > 1) {
    const int64_t batch = (fit + fail) / 2;
    (fits(batch) ? fit : fail) = batch;
  }
  return fit;
}

}  // namespace densessm
