#include "trainer.h"

#include <nlohmann/json.hpp>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/model_io.h"
#include "train/posix_file.h"
#include "train/task.h"

#ifndef TFM_VERSION
#define TFM_VERSION "0.0.0"
#endif

namespace fs = std::filesystem;

namespace tfm::train {

namespace {

// Resident set size of this process (bytes) from /proc/self/statm; 0 if unreadable.
int64_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(in >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

std::atomic<int> g_signal{0};
extern "C" void on_signal(int sig) { g_signal.store(sig); }

// Installs SIGINT/SIGTERM handlers for the lifetime of a run. SA_RESETHAND:
// a second signal takes the default action (the checkpoint on disk is
// always whole, so stopping hard is safe).
class SignalScope {
 public:
  SignalScope() {
    g_signal.store(0);
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

struct Run {
  Config cfg;
  fs::path out_dir;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<Task> task;
  std::unique_ptr<optim::Optimizer> opt;
  optim::Schedule schedule;
  std::string best_metric;  // "val_loss" (lower is better) or "val_bleu" (higher)
  int64_t step = 0;
  int64_t tokens_seen = 0;
  double best_val = std::numeric_limits<double>::infinity();
  std::string metrics;  // JSON lines, also mirrored to OUT_DIR/metrics.jsonl
  std::string last_checkpoint;
  bool tty = false;
};

std::unique_ptr<optim::Optimizer> make_optimizer(const Config& cfg, const layers::Module& model) {
  auto groups = optim::decay_groups(model.named_parameters(), static_cast<float>(cfg.get_float("optim.weight_decay")),
                                    !cfg.get_bool("optim.decay_vectors"), !cfg.get_bool("optim.decay_embeddings"));
  const float lr = static_cast<float>(cfg.get_float("optim.lr"));
  const std::string name = cfg.get_string("optim.name");
  if (name == "sgd")
    return std::make_unique<optim::SGD>(std::move(groups), lr, static_cast<float>(cfg.get_float("optim.momentum")),
                                        cfg.get_bool("optim.nesterov"));
  return std::make_unique<optim::Adam>(std::move(groups), lr, static_cast<float>(cfg.get_float("optim.beta1")),
                                       static_cast<float>(cfg.get_float("optim.beta2")),
                                       static_cast<float>(cfg.get_float("optim.eps")), name == "adamw");
}

optim::Schedule make_schedule(const Config& cfg) {
  optim::Schedule s;
  s.kind = optim::parse_schedule(cfg.get_string("schedule.kind"));
  s.lr = static_cast<float>(cfg.get_float("optim.lr"));
  s.min_lr = static_cast<float>(cfg.get_float("schedule.min_lr"));
  s.warmup = cfg.get_int("schedule.warmup_steps");
  s.total = cfg.get_int("schedule.total_steps") ? cfg.get_int("schedule.total_steps") : cfg.get_int("train.max_steps");
  optim::validate(s);
  return s;
}

void append_metrics(Run& r, const nlohmann::json& j) {
  const std::string line = j.dump() + "\n";
  r.metrics += line;
  std::ofstream out(r.out_dir / "metrics.jsonl", std::ios::app);
  out << line;
}

CheckpointData snapshot(const Run& r) {
  CheckpointData d;
  d.meta["tfm_version"] = TFM_VERSION;
  d.meta["created"] = now_iso();
  d.meta["model_family"] = r.cfg.get_string("model.family");
  d.meta["optimizer"] = r.opt->name();
  d.meta["best_metric"] = r.best_metric;
  d.meta["best_value"] = std::isfinite(r.best_val) ? fmt::format("{:.17g}", r.best_val) : "";
  d.ints["step"] = r.step;
  d.ints["tokens_seen"] = r.tokens_seen;
  d.ints["optimizer_steps"] = r.opt->steps();
  d.config_yaml = r.cfg.to_yaml();
  d.params = r.task->model().named_parameters();
  d.optimizer_state = r.opt->state();
  r.task->save_state(d);
  d.metrics_jsonl = r.metrics;
  return d;
}

// Writes the step's checkpoint, points last.h5 (and best.h5) at it, and
// keeps only the train.keep_last newest numbered checkpoints.
void save(Run& r, bool is_best) {
  const int64_t keep = r.cfg.get_int("train.keep_last");
  char name[32];
  std::snprintf(name, sizeof name, "ckpt_%07lld.h5", static_cast<long long>(r.step));
  const fs::path numbered = r.out_dir / name, last = r.out_dir / "last.h5", best = r.out_dir / "best.h5";
  const CheckpointData d = snapshot(r);
  if (keep > 0) {
    save_checkpoint(numbered.string(), d);
    link_file_atomic(numbered.string(), last.string());
  } else {
    save_checkpoint(last.string(), d);
  }
  if (is_best) link_file_atomic(last.string(), best.string());
  r.last_checkpoint = last.string();
  std::vector<fs::path> numbered_files;
  for (const auto& e : fs::directory_iterator(r.out_dir)) {
    const std::string f = e.path().filename().string();
    if (f.rfind("ckpt_", 0) == 0 && f.ends_with(".h5")) numbered_files.push_back(e.path());
  }
  std::sort(numbered_files.begin(), numbered_files.end());
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < numbered_files.size(); ++i) fs::remove(numbered_files[i]);
}

std::shared_ptr<spdlog::logger> make_logger(const fs::path& out_dir, bool quiet) {
  std::vector<spdlog::sink_ptr> sinks;
  if (!quiet) sinks.push_back(std::make_shared<spdlog::sinks::stdout_sink_mt>());
  sinks.push_back(std::make_shared<spdlog::sinks::basic_file_sink_mt>((out_dir / "train.log").string(), false));
  auto log = std::make_shared<spdlog::logger>("tfm", sinks.begin(), sinks.end());
  log->set_pattern("[%Y-%m-%d %H:%M:%S] %v");
  log->flush_on(spdlog::level::info);
  return log;
}

std::string fmt_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s);
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

}  // namespace

std::string resolve_checkpoint(const std::string& path) {
  if (fs::is_directory(path)) {
    const fs::path last = fs::path(path) / "last.h5";
    TFM_CHECK(fs::is_regular_file(last), path, ": a run directory without last.h5 (nothing to resume from)");
    return last.string();
  }
  TFM_CHECK(fs::is_regular_file(path), path, ": no such checkpoint file or run directory");
  return path;
}

int run_train(const TrainArgs& args) {
  Run r;
  // ---- configuration: everything is validated before anything is allocated or written
  CheckpointData resumed;
  std::string resume_path;
  if (!args.resume.empty()) {
    resume_path = resolve_checkpoint(args.resume);
    resumed = load_checkpoint(resume_path);
    r.cfg = args.config_path.empty() ? Config::parse(resumed.config_yaml, resume_path + " (config)", args.overrides)
                                     : Config::load(args.config_path, args.overrides);
  } else {
    TFM_CHECK(!args.config_path.empty(), "tfm train: a config file (or --resume) is required");
    r.cfg = Config::load(args.config_path, args.overrides);
  }
  r.cfg.validate();
  r.schedule = make_schedule(r.cfg);
  r.out_dir = r.cfg.get_string("train.out_dir");
  TFM_CHECK(!args.resume.empty() || !fs::exists(r.out_dir / "last.h5"), "train.out_dir: ", r.out_dir.string(),
            " already holds a run (last.h5). Continue it with `tfm train --resume ", r.out_dir.string(),
            "`, or choose another train.out_dir (--set train.out_dir=...), or remove it");
  if (r.cfg.get_int("train.threads") > 0) core::set_num_threads(static_cast<int>(r.cfg.get_int("train.threads")));
  r.best_metric = r.cfg.get_string("train.best_metric");

  // ---- task (data, tokenizers, model), optimizer, state
  r.task = make_task(r.cfg, args.resume.empty() ? nullptr : &resumed, resume_path);
  r.opt = make_optimizer(r.cfg, r.task->model());
  if (!args.resume.empty()) {
    // The step may reach train.max_steps' largest allowed value, no further.
    r.step = checkpoint_int(resumed, "step", resume_path, 0, static_cast<int64_t>(find_key("train.max_steps")->max));
    r.tokens_seen = checkpoint_tokens_seen(resumed, resume_path);
    r.task->load_state(resumed, resume_path);
    TFM_CHECK(resumed.meta["optimizer"] == r.opt->name(), resume_path, ": optimizer state is for '",
              resumed.meta["optimizer"], "', the config asks for optim.name = ", r.opt->name());
    // Skipped (non-finite) steps do not advance the optimizer: 0 <= optimizer_steps <= step.
    r.opt->load_state(resumed.optimizer_state, checkpoint_int(resumed, "optimizer_steps", resume_path, 0, r.step));
    if (resumed.meta["best_metric"] == r.best_metric && !resumed.meta["best_value"].empty())
      r.best_val = std::stod(resumed.meta["best_value"]);
    r.metrics = resumed.metrics_jsonl;
  }
  if (r.best_metric == "val_bleu") r.best_val = std::isfinite(r.best_val) ? r.best_val : -1.0;

  // ---- run directory
  std::error_code ec;
  fs::create_directories(r.out_dir, ec);
  TFM_CHECK(!ec && fs::is_directory(r.out_dir), "train.out_dir: cannot create ", r.out_dir.string(), " (",
            ec.message(), ")");
  write_file_atomic((r.out_dir / "config.yaml").string(), r.cfg.to_yaml());
  write_file_atomic((r.out_dir / "metrics.jsonl").string(), r.metrics);  // a resumed run continues from its checkpoint
  r.log = make_logger(r.out_dir, args.quiet);
  r.tty = !args.quiet && isatty(STDERR_FILENO);

  const int64_t max_steps = r.cfg.get_int("train.max_steps");
  const int64_t accum = r.cfg.get_int("train.grad_accum"), log_every = r.cfg.get_int("train.log_every");
  const int64_t eval_every = r.cfg.get_int("train.eval_every"), ckpt_every = r.cfg.get_int("train.checkpoint_every");
  const float clip = static_cast<float>(r.cfg.get_float("train.grad_clip"));
  const bool skip_nonfinite = r.cfg.get_bool("train.skip_nonfinite");
  r.log->info("tfm {} | {} | resolved config:\n{}", TFM_VERSION, args.resume.empty() ? "new run" : "resuming " + resume_path,
              r.cfg.to_yaml());
  r.log->info("{}, threads: {}", r.task->describe(), core::num_threads());
  if (r.step >= max_steps) {
    r.log->info("nothing to do: step {} already reached train.max_steps = {}", r.step, max_steps);
    return 0;
  }

  SignalScope signals;
  const auto start = std::chrono::steady_clock::now();
  auto window_start = start;
  int64_t window_tokens = 0, window_steps = 0;
  double window_loss = 0;
  core::reset_peak_memory();
  while (r.step < max_steps) {
    const int64_t step = r.step + 1;
    const float lr = r.schedule.lr_at(step);
    r.opt->set_lr(lr);
    r.opt->zero_grad();
    double loss_sum = 0;
    bool finite = true;
    for (int64_t m = 0; m < accum; ++m) {
      int64_t tokens = 0;
      core::Tensor loss = r.task->next_loss(tokens);
      const float lv = loss.item();
      finite = finite && std::isfinite(lv);
      loss_sum += lv;
      (accum > 1 ? core::mul(loss, 1.0f / static_cast<float>(accum)) : loss).backward();
      r.tokens_seen += tokens;
      window_tokens += tokens;
    }
    const float loss_value = static_cast<float>(loss_sum / static_cast<double>(accum));
    const float gnorm = clip > 0 ? optim::clip_grad_norm(r.task->model().parameters(), clip)
                                 : optim::grad_norm(r.task->model().parameters());
    finite = finite && std::isfinite(gnorm);
    r.step = step;
    if (!finite) {
      if (!skip_nonfinite) {
        r.log->error("step {}: the loss ({}) or gradient norm ({}) is not finite; stopping. The last good checkpoint is {}. "
                     "Lower optim.lr, or set train.skip_nonfinite=true to skip such steps.",
                     step, loss_value, gnorm, r.last_checkpoint.empty() ? "(none yet)" : r.last_checkpoint);
        return 3;
      }
      r.log->warn("step {}: non-finite loss or gradient; step skipped (train.skip_nonfinite)", step);
      r.opt->zero_grad();
    } else {
      r.opt->step();
    }
    window_loss += loss_value;
    ++window_steps;

    nlohmann::json row;
    bool saved = false;
    const bool ckpt_step = ckpt_every > 0 && step % ckpt_every == 0;
    const bool do_log = step % log_every == 0 || step == max_steps;
    const bool do_eval = (eval_every > 0 && step % eval_every == 0) || step == max_steps;
    if (do_log || do_eval) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const double wsec = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      const double tps = wsec > 0 ? static_cast<double>(window_tokens) / wsec : 0.0;
      row["step"] = step;
      row["train_loss"] = window_loss / static_cast<double>(window_steps);
      row["lr"] = lr;
      row["grad_norm"] = gnorm;
      row["tokens_per_s"] = tps;
      row["elapsed_s"] = elapsed;
      const core::MemoryStats mem = core::memory_stats();
      row["peak_mem_bytes"] = mem.peak_bytes;          // live tensors, peak
      row["reserved_mem_bytes"] = mem.reserved_bytes;  // tensors + allocator cache
      row["rss_bytes"] = resident_bytes();             // the whole process
      bool is_best = false;
      std::string eval_text;
      if (do_eval) {
        for (const auto& [name, value] : r.task->evaluate()) {
          row[name] = value;
          eval_text += fmt::format(" | {} {:.4f}", name == "val_loss" ? "val" : name, value);
        }
        TFM_CHECK(row.contains(r.best_metric), "the task did not report ", r.best_metric);
        const double v = row[r.best_metric].get<double>();
        is_best = r.best_metric == "val_bleu" ? v > r.best_val : v < r.best_val;
        if (is_best) r.best_val = v;
      }
      append_metrics(r, row);
      const double step_time = wsec / static_cast<double>(window_steps);
      if (r.tty) std::fprintf(stderr, "\r\033[K");
      r.log->info(
          "step {:>6}/{} | loss {:.4f}{} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s | peak mem {:.1f} MB | rss {:.0f} MB "
          "| ETA {}",
          step, max_steps, row["train_loss"].get<double>(), eval_text, lr, gnorm, tps,
          static_cast<double>(mem.peak_bytes) / 1e6, static_cast<double>(row["rss_bytes"].get<int64_t>()) / 1e6,
                  fmt_duration(step_time * static_cast<double>(max_steps - step)));
      window_start = std::chrono::steady_clock::now();
      window_tokens = window_steps = 0;
      window_loss = 0;
      // A new best is always written; otherwise checkpoints follow train.checkpoint_every.
      if (is_best || ckpt_step || step == max_steps) {
        save(r, is_best);
        saved = true;
      }
    } else if (ckpt_step) {
      save(r, false);
      saved = true;
    }
    if (r.tty) std::fprintf(stderr, "\r\033[Kstep %lld/%lld loss %.4f", static_cast<long long>(step),
                            static_cast<long long>(max_steps), loss_value);
    if (const int sig = g_signal.load(); sig != 0) {
      if (r.tty) std::fprintf(stderr, "\r\033[K");
      if (!saved) save(r, false);
      r.log->info("interrupted by signal {} after step {}; checkpoint saved to {}. Resume with: tfm train --resume {}", sig,
                  step, r.last_checkpoint, r.out_dir.string());
      return 0;
    }
  }
  if (r.tty) std::fprintf(stderr, "\r\033[K");
  r.log->info("done: {} steps, best {} {:.4f}, checkpoint {}", r.step, r.best_metric, r.best_val, r.last_checkpoint);
  return 0;
}

}  // namespace tfm::train
