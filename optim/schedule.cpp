#include "schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace tfm::optim {

ScheduleKind parse_schedule(const std::string& s) {
  if (s == "constant") return ScheduleKind::constant;
  if (s == "cosine") return ScheduleKind::cosine;
  if (s == "inverse_sqrt") return ScheduleKind::inverse_sqrt;
  if (s == "linear") return ScheduleKind::linear;
  detail::throw_error("unknown schedule '", s, "' (allowed: constant, cosine, inverse_sqrt, linear)");
}

void validate(const Schedule& s) {
  TFM_CHECK(s.lr > 0.0f && std::isfinite(s.lr), "schedule: lr must be positive, got ", s.lr);
  TFM_CHECK(s.min_lr >= 0.0f && s.min_lr <= s.lr, "schedule: min_lr must be in [0, lr], got ", s.min_lr);
  TFM_CHECK(s.warmup >= 0, "schedule: warmup must be >= 0, got ", s.warmup);
  if (s.kind == ScheduleKind::inverse_sqrt) TFM_CHECK(s.warmup > 0, "schedule: inverse_sqrt needs warmup > 0");
  if (s.kind == ScheduleKind::cosine || s.kind == ScheduleKind::linear)
    TFM_CHECK(s.total > s.warmup, "schedule: total steps (", s.total, ") must exceed warmup (", s.warmup, ")");
}

float Schedule::lr_at(int64_t step) const {
  const double t = static_cast<double>(std::max<int64_t>(step, 1));
  switch (kind) {
    case ScheduleKind::constant:
      return lr;
    case ScheduleKind::inverse_sqrt: {
      const double w = static_cast<double>(warmup);
      return static_cast<float>(lr * std::min(t / w, std::sqrt(w / t)));
    }
    case ScheduleKind::cosine:
    case ScheduleKind::linear: {
      if (step <= warmup) return static_cast<float>(lr * t / static_cast<double>(warmup));
      if (step >= total) return min_lr;
      const double progress = (t - warmup) / static_cast<double>(total - warmup);
      const double shape = kind == ScheduleKind::cosine ? 0.5 * (1.0 + std::cos(M_PI * progress)) : 1.0 - progress;
      return static_cast<float>(min_lr + (lr - min_lr) * shape);
    }
  }
  return lr;
}

}  // namespace tfm::optim
