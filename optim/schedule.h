// Learning-rate schedules: lr_at(step) for step = 1, 2, ... (the step about
// to be taken).
//   constant:     lr
//   cosine:       linear warmup from 0 to lr over `warmup` steps, then cosine
//                 decay from lr to min_lr at `total` steps (min_lr after)
//   inverse_sqrt: (Noam) lr · min(step/warmup, sqrt(warmup/step))
//   linear:       linear warmup, then linear decay to min_lr at `total`
#pragma once

#include <cstdint>
#include <string>

namespace tfm::optim {

enum class ScheduleKind { constant, cosine, inverse_sqrt, linear };
ScheduleKind parse_schedule(const std::string& s);  // "constant" | "cosine" | "inverse_sqrt" | "linear"

struct Schedule {
  ScheduleKind kind = ScheduleKind::constant;
  float lr = 1e-3f;
  float min_lr = 0.0f;
  int64_t warmup = 0;
  int64_t total = 0;  // cosine and linear: the step at which min_lr is reached
  float lr_at(int64_t step) const;
};

void validate(const Schedule& s);  // throws naming the bad field

}  // namespace tfm::optim
