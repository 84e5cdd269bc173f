#include "trainer.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/allocator.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "dist/comm.h"
#include "core/profile.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/data_parallel.h"
#include "train/zero_shard.h"
#include "train/loaded_model.h"
#include "train/model_io.h"
#include "train/posix_file.h"
#include "train/run_files.h"
#include "train/run_lock.h"
#include "train/signals.h"
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

std::string now_iso() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// The checkpoint a run resumes from (none for a new run).
struct Resume {
  std::string path;
  CheckpointData data;
  bool active() const { return !path.empty(); }
  std::string meta(const std::string& key) const {
    auto it = data.meta.find(key);
    return it == data.meta.end() ? std::string() : it->second;
  }
};

// The loop's settings, read from the config once.
struct LoopSettings {
  int64_t max_steps = 0, accum = 1, log_every = 1, eval_every = 0, ckpt_every = 0;
  float clip = 0;
  bool skip_nonfinite = false;
};

// What one optimizer step produced.
struct StepResult {
  int64_t step = 0;
  float lr = 0, loss = 0, grad_norm = 0;
  bool finite = true;
  double comm_wait_s = 0;  // waiting for gradient sums after backward (more than one rank)
  int64_t overlapped = 0;   // gradient buckets started during backward
};

// Training throughput and loss since the last logged row.
struct Window {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  int64_t tokens = 0, steps = 0;
  double loss = 0, comm_wait_s = 0;
};

struct Run {
  Config cfg;
  LoopSettings loop;
  fs::path out_dir;
  RunLock lock;                          // held for the whole run (one writer per directory)
  std::unique_ptr<RunLogger> log_file;   // train.log, checked after every step
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<Task> task;
  std::unique_ptr<optim::Optimizer> opt;
  optim::Schedule schedule;
  std::string best_metric;  // "val_loss" (lower is better), "val_bleu", "val_chrf" or "val_exact" (higher)
  double elapsed_before = 0;  // seconds of training before this process (a resumed run's checkpoint)
  int64_t step = 0;
  int64_t tokens_seen = 0;
  double best_val = std::numeric_limits<double>::infinity();
  std::string metrics;  // JSON lines, also mirrored to OUT_DIR/metrics.jsonl
  std::string last_checkpoint;
  std::string data_fingerprint;  // of the data files at the start (checkpoint metadata)
  bool tty = false;
  std::chrono::steady_clock::time_point start;
  // Data parallelism (data_parallel.h): rank 0 alone writes files, logs and evaluates.
  bool root = true;
  std::unique_ptr<GradSync> sync;  // only with more than one rank
  std::unique_ptr<ZeroShard> zero;  // train.shard_optimizer with more than one rank
};

// With `zero` (ZeRO-1) the optimizer gets only this rank's share of the parameters.
std::unique_ptr<optim::Optimizer> make_optimizer(const Config& cfg, const layers::Module& model,
                                                 const ZeroShard* zero) {
  auto groups = optim::decay_groups(model.named_parameters(), static_cast<float>(cfg.get_float("optim.weight_decay")),
                                    !cfg.get_bool("optim.decay_vectors"), !cfg.get_bool("optim.decay_embeddings"));
  if (zero) groups = zero->own(std::move(groups));
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

// Training time so far, continuing a resumed run's clock.
double elapsed_s(const Run& r) {
  return r.elapsed_before + std::chrono::duration<double>(std::chrono::steady_clock::now() - r.start).count();
}

bool higher_is_better(const std::string& metric) { return metric != "val_loss"; }

void append_metrics(Run& r, const nlohmann::json& j) {
  const std::string line = j.dump() + "\n";
  append_line_checked((r.out_dir / "metrics.jsonl").string(), line);
  r.metrics += line;
}

CheckpointData snapshot(const Run& r, std::vector<std::pair<std::string, core::Tensor>> optimizer_state) {
  CheckpointData d;
  d.meta["tfm_version"] = TFM_VERSION;
  d.meta["created"] = now_iso();
  d.meta["model_family"] = r.cfg.get_string("model.family");
  d.meta["optimizer"] = r.opt->name();
  d.meta["best_metric"] = r.best_metric;
  d.meta["best_value"] = std::isfinite(r.best_val) ? fmt::format("{:.17g}", r.best_val) : "";
  d.meta["data_fingerprint"] = r.data_fingerprint;
  d.ints["step"] = r.step;
  d.ints["tokens_seen"] = r.tokens_seen;
  d.ints["optimizer_steps"] = r.opt->steps();
  d.meta["elapsed_s"] = fmt::format("{:.17g}", elapsed_s(r));
  d.config_yaml = r.cfg.to_yaml();
  d.params = r.task->model().named_parameters();
  d.optimizer_state = std::move(optimizer_state);
  r.task->save_state(d);
  d.metrics_jsonl = r.metrics;
  return d;
}

// Writes the step's checkpoint, points last.h5 (and best.h5) at it, and
// keeps only the train.keep_last newest numbered checkpoints.
void save(Run& r, bool is_best) {
  check_params_identical(r.task->model().named_parameters(), "step " + std::to_string(r.step) + " checkpoint");
  auto state = r.zero ? r.zero->full_state(*r.opt) : r.opt->state();  // gathered from every rank's share
  if (!r.root) return;
  const int64_t keep = r.cfg.get_int("train.keep_last");
  char name[32];
  std::snprintf(name, sizeof name, "ckpt_%07lld.h5", static_cast<long long>(r.step));
  const fs::path numbered = r.out_dir / name, last = r.out_dir / "last.h5", best = r.out_dir / "best.h5";
  const CheckpointData d = snapshot(r, std::move(state));
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
  for (std::size_t i = 0; i + static_cast<std::size_t>(keep) < numbered_files.size(); ++i) {
    std::error_code ec;
    fs::remove(numbered_files[i], ec);
    TFM_CHECK(!ec, numbered_files[i].string(), ": cannot remove an old checkpoint (train.keep_last): ", ec.message());
  }
}

std::string fmt_duration(double s) {
  char buf[32];
  const long t = static_cast<long>(s);
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

// ---------------------------------------------------------------- the steps of run_train

Resume find_resume(const TrainArgs& args) {
  Resume r;
  if (args.resume.empty()) return r;
  r.path = resolve_checkpoint(args.resume);
  r.data = load_checkpoint(r.path);
  check_usable(r.data, r.path, "train --resume");  // NaN weights or a broken tokenizer: refuse before training
  return r;
}

// The config file (or, resuming without one, the checkpoint's own config)
// with the --set overrides, validated.
// The data files differ from the ones the checkpoint was trained on: a
// warning when its tokenizer still covers them, an error when it does not.
void check_resume_data(const Config& cfg, const Resume& resume) {
  const DataChange d = data_change(resume.data, cfg, resume.path);
  if (d.changes.empty()) return;
  TFM_CHECK(d.unknown_fraction <= kMaxUnknownFraction, "data.path: ", cfg.get_string("data.path"),
            ": the data changed since ", resume.path, " was written (", d.summary(), "; allowed up to ",
            100 * kMaxUnknownFraction, "%): this is other data. Restore the files, or train a new run on it");
  std::fprintf(stderr, "tfm: warning: the data changed since %s was written (%s); resuming\n", resume.path.c_str(),
               d.summary().c_str());
}

// Resuming, the checkpoint's config is the run's: a config file beside
// --resume is refused (it would be ignored), and so is a --set that changes
// an architecture key. The memory estimate is checked before anything is built.
Config resolve_config(const TrainArgs& args, const Resume& resume) {
  TFM_CHECK(resume.active() || !args.config_path.empty(), "tfm train: a config file (or --resume) is required");
  TFM_CHECK(!resume.active() || args.config_path.empty(), "tfm train ", args.config_path, " --resume ", args.resume,
            ": give a config file or --resume, not both; a resumed run keeps the config stored in its checkpoint ",
            "(change training keys with --set KEY=VALUE)");
  Config cfg;
  if (resume.active()) {
    const std::string origin = resume.path + " (config)";
    check_resume_overrides(Config::parse(resume.data.config_yaml, origin), args.overrides, resume.path);
    cfg = Config::parse(resume.data.config_yaml, origin, args.overrides);
  } else {
    cfg = Config::load(args.config_path, args.overrides);
  }
  cfg.validate();
  check_training_memory(cfg);
  if (resume.active()) check_resume_data(cfg, resume);
  return cfg;
}

// A new run refuses a directory that already holds one.
void check_new_run_dir(const fs::path& out_dir, const Resume& resume) {
  TFM_CHECK(resume.active() || !fs::exists(out_dir / "last.h5"), "train.out_dir: ", out_dir.string(),
            " already holds a run (last.h5). Continue it with `tfm train --resume ", out_dir.string(),
            "`, or choose another train.out_dir (--set train.out_dir=...), or remove it");
}

// Settings, schedule, task (data, tokenizers, model) and optimizer.
void setup(Run& r, const Resume& resume) {
  const Config& c = r.cfg;
  r.loop = {c.get_int("train.max_steps"),   c.get_int("train.grad_accum"),
            c.get_int("train.log_every"),   c.get_int("train.eval_every"),
            c.get_int("train.checkpoint_every"), static_cast<float>(c.get_float("train.grad_clip")),
            c.get_bool("train.skip_nonfinite")};
  r.schedule = make_schedule(c);
  r.out_dir = c.get_string("train.out_dir");
  // An existing directory is locked now, so a second writer hears about the
  // first one (and its PID) before anything else; a new one in open_run_dir().
  if (r.root && fs::is_directory(r.out_dir)) r.lock = RunLock(r.out_dir.string());
  if (r.root) check_new_run_dir(r.out_dir, resume);
  if (c.get_int("train.threads") > 0) core::set_num_threads(static_cast<int>(c.get_int("train.threads")));
  r.best_metric = c.get_string("train.best_metric");
  r.data_fingerprint = data_fingerprint(c);
  r.task = core::with_oom_context("loading the data of data.path = " + c.get_string("data.path") +
                                      " and building the tokenizer and model",
                                  [&] { return make_task(c, resume.active() ? &resume.data : nullptr, resume.path); });
  if (dist::size() > 1) {
    TFM_CHECK(c.get_string("model.family") != "gpt" || c.get_int("train.batch_size") >= dist::size(),
              "train.batch_size = ", c.get_int("train.batch_size"), " is smaller than the number of ranks (",
              dist::size(), "): the global batch is split by rows, every rank needs at least one");
    r.task->set_shard(dist::rank(), dist::size());
    // A recomputed block (activation checkpointing, reversible layers) hands its parameters their
    // gradients in a nested pass that the leaf-final hook does not see: sum after backward then.
    const bool overlap = !c.get_bool("model.checkpoint_activations") && !c.get_bool("model.reversible");
    r.sync = std::make_unique<GradSync>(r.task->model().parameters(),
                                        static_cast<int64_t>(c.get_float("train.allreduce_bucket_mb") * 1048576.0),
                                        overlap);
  }
  if (dist::size() > 1 && c.get_bool("train.shard_optimizer"))
    r.zero = std::make_unique<ZeroShard>(r.task->model().named_parameters());
  r.opt = make_optimizer(c, r.task->model(), r.zero.get());
  if (higher_is_better(r.best_metric)) r.best_val = -1.0;
}

// The training time a checkpoint had reached: its elapsed_s attribute, or,
// in a checkpoint written before it was stored, the last elapsed_s of its
// metric history (0 when there is none).
double resumed_elapsed(const Resume& resume) {
  const std::string e = resume.meta("elapsed_s");
  if (!e.empty()) {
    char* end = nullptr;
    const double v = std::strtod(e.c_str(), &end);
    TFM_CHECK(end && *end == '\0' && std::isfinite(v) && v >= 0, resume.path, ": attribute elapsed_s = '", e,
              "' is not a non-negative number of seconds");
    return v;
  }
  double last = 0;
  std::istringstream in(resume.data.metrics_jsonl);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("elapsed_s") && j["elapsed_s"].is_number()) last = j["elapsed_s"].get<double>();
  }
  return last;
}

// Counters, task state, optimizer state, best metric and history from the checkpoint.
void restore(Run& r, const Resume& resume) {
  const CheckpointData& d = resume.data;
  // The step may reach train.max_steps' largest allowed value, no further.
  r.step = checkpoint_int(d, "step", resume.path, 0, static_cast<int64_t>(find_key("train.max_steps")->max));
  r.tokens_seen = checkpoint_tokens_seen(d, resume.path);
  r.task->load_state(d, resume.path);
  TFM_CHECK(resume.meta("optimizer") == r.opt->name(), resume.path, ": optimizer state is for '",
            resume.meta("optimizer"), "', the config asks for optim.name = ", r.opt->name());
  // Skipped (non-finite) steps do not advance the optimizer: 0 <= optimizer_steps <= step.
  // A run stopped before its first optimizer step (a signal during start-up)
  // saved no state (the slots are made by the first step): keep the fresh one.
  const int64_t opt_steps = checkpoint_int(d, "optimizer_steps", resume.path, 0, r.step);
  if (opt_steps > 0 || !d.optimizer_state.empty()) r.opt->load_state(d.optimizer_state, opt_steps);
  if (resume.meta("best_metric") == r.best_metric && !resume.meta("best_value").empty())
    r.best_val = std::stod(resume.meta("best_value"));
  r.metrics = d.metrics_jsonl;
  r.elapsed_before = resumed_elapsed(resume);
}

// The run directory, locked for this process: stale temporaries removed,
// config.yaml, metrics.jsonl (a resumed run continues from its checkpoint's
// history) and the logger writing train.log.
void open_run_dir(Run& r, const Resume& resume, bool quiet) {
  if (!r.root) {  // the other ranks stay silent: a logger without sinks
    r.log = std::make_shared<spdlog::logger>("tfm-rank-" + std::to_string(dist::rank()));
    return;
  }
  std::error_code ec;
  fs::create_directories(r.out_dir, ec);
  TFM_CHECK(!ec && fs::is_directory(r.out_dir), "train.out_dir: cannot create ", r.out_dir.string(), " (",
            ec.message(), ")");
  if (!r.lock.held()) r.lock = RunLock(r.out_dir.string());
  // Checked again under the lock: another new run may have started since setup().
  check_new_run_dir(r.out_dir, resume);
  const std::vector<std::string> stale = remove_stale_temp_files(r.out_dir.string());
  write_file_atomic((r.out_dir / "config.yaml").string(), r.cfg.to_yaml());
  write_file_atomic((r.out_dir / "metrics.jsonl").string(), r.metrics);
  r.log_file = std::make_unique<RunLogger>((r.out_dir / "train.log").string(), quiet, dist::size() > 1);
  r.log = r.log_file->logger();
  r.tty = !quiet && isatty(STDERR_FILENO);
  for (const std::string& f : stale)
    r.log->info("removed {}: a temporary file left by an interrupted save", (r.out_dir / f).string());
}

void announce(const Run& r, const Resume& resume) {
  r.log->info("tfm {} | {} | resolved config:\n{}", TFM_VERSION, resume.active() ? "resuming " + resume.path : "new run",
              r.cfg.to_yaml());
  r.log->info("{}, threads: {}", r.task->describe(), core::num_threads());
}

// One optimizer step: grad_accum micro-batches forward and backward, clipping,
// and the update (skipped when the loss or gradient is not finite).
StepResult train_step(Run& r, Window& w) {
  StepResult s;
  s.step = r.step + 1;
  s.lr = r.schedule.lr_at(s.step);
  r.opt->set_lr(s.lr);
  {
    core::profile::Frame prof(core::profile::Kind::optimizer);
    if (r.zero) {
      for (core::Tensor& p : r.task->model().parameters()) p.zero_grad();  // the optimizer holds only its share
    } else {
      r.opt->zero_grad();
    }
  }
  const int64_t accum = r.loop.accum;
  double loss_sum = 0;
  for (int64_t m = 0; m < accum; ++m) {
    int64_t tokens = 0;
    core::Tensor loss = r.task->next_loss(tokens);  // this rank's share (undefined: an empty slice)
    if (loss.defined()) {
      loss_sum += loss.item();
      // The step's last backward starts summing gradient buckets across ranks as they become final.
      core::LeafGradFinalScope hook(r.sync && m + 1 == accum ? r.sync->hook() : core::LeafGradFinalHook());
      (accum > 1 ? core::mul(loss, 1.0f / static_cast<float>(accum)) : loss).backward();
    }
    r.tokens_seen += tokens;
    w.tokens += tokens;
  }
  if (r.sync) {
    r.sync->finish();
    s.comm_wait_s = r.sync->last_wait_s();
    s.overlapped = static_cast<int64_t>(r.sync->last_overlapped());
    w.comm_wait_s += s.comm_wait_s;
    dist::allreduce_sum(&loss_sum, 1, "the sum of the step's loss");
  }
  s.finite = std::isfinite(loss_sum);
  s.loss = static_cast<float>(loss_sum / static_cast<double>(accum));
  core::profile::Frame prof(core::profile::Kind::optimizer);
  const auto params = r.task->model().parameters();
  s.grad_norm = r.loop.clip > 0 ? optim::clip_grad_norm(params, r.loop.clip) : optim::grad_norm(params);
  s.finite = s.finite && std::isfinite(s.grad_norm);
  r.step = s.step;
  if (s.finite) {
    r.opt->step();
    if (r.zero) r.zero->gather_parameters();
  } else if (r.loop.skip_nonfinite) {
    r.log->warn("step {}: non-finite loss or gradient; step skipped (train.skip_nonfinite)", s.step);
    r.opt->zero_grad();
  }
  w.loss += s.loss;
  ++w.steps;
  return s;
}

// train.memory_check: before the first step of this process, the optimizer's
// state, and forward and backward of the micro-batches of the rest of the
// run that need the most memory (Task::for_each_heaviest), gradients discarded. Peak memory is then
// reached here rather than at some late step, the allocator's cache holds
// blocks for those shapes, and a run that does not fit fails at once.
void memory_check(Run& r) {
  if (!r.cfg.get_bool("train.memory_check")) return;
  const auto t0 = std::chrono::steady_clock::now();
  r.opt->allocate_state();  // what the first step would create
  const std::vector<core::Tensor> params = r.task->model().parameters();
  // A step's first micro-batch runs without gradients; with train.grad_accum
  // the later ones run with them live, and so does every batch of the check.
  const bool accumulating = r.loop.accum > 1;
  const int64_t ran = core::with_oom_context("the memory check (the run's largest batches, train.memory_check)", [&] {
    return r.task->for_each_heaviest((r.loop.max_steps - r.step) * r.loop.accum, [&](const core::Tensor& loss) {
      if (accumulating)
        for (core::Tensor p : params)
          if (!p.grad().defined()) p.set_grad(core::zeros(p.shape()));
      loss.backward();
      if (!accumulating)
        for (core::Tensor p : params) p.zero_grad();
    });
  });
  for (core::Tensor p : params) p.zero_grad();
  if (ran == 0) return;
  const core::MemoryStats m = core::memory_stats();
  r.log->info("memory check: forward and backward of the run's {} largest batches in {:.1f} s; peak tensor memory "
              "{:.1f} MB, reserved {:.1f} MB",
              ran, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
              static_cast<double>(m.peak_bytes) / 1e6, static_cast<double>(m.reserved_bytes) / 1e6);
}

// train.profile = N: steps 2..N+1 of this process (step 1 creates the oneDNN
// primitives and fills the allocator cache) are timed per op kind
// (core/profile.h) and the table is logged after them. Only train_step()
// is profiled: logging, evaluation and checkpoints are not.
class StepProfiler {
 public:
  explicit StepProfiler(int64_t steps) : steps_(steps) {}
  StepResult run(Run& r, Window& w) {
    const bool on = steps_ > 0 && seen_++ >= 1 && done_ < steps_;
    if (!on) return train_step(r, w);
    if (done_ == 0) core::profile::reset();
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t cpu0 = core::profile::process_cpu_ns();
    core::profile::set_enabled(true);
    StepResult s;
    try {
      s = train_step(r, w);
    } catch (...) {
      core::profile::set_enabled(false);
      throw;
    }
    core::profile::set_enabled(false);
    wall_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    cpu_ += 1e-9 * static_cast<double>(core::profile::process_cpu_ns() - cpu0);
    if (++done_ == steps_)
      r.log->info("train.profile: where the time of steps {}..{} went\n{}", s.step - steps_ + 1, s.step,
                  core::profile::format_table(core::profile::rows(), wall_, steps_, cpu_));
    return s;
  }

 private:
  int64_t steps_, seen_ = 0, done_ = 0;
  double wall_ = 0, cpu_ = 0;
};

int stop_nonfinite(const Run& r, const StepResult& s) {
  r.log->error("step {}: the loss ({}) or gradient norm ({}) is not finite; stopping. The last good checkpoint is {}. "
               "Lower optim.lr, or set train.skip_nonfinite=true to skip such steps.",
               s.step, s.loss, s.grad_norm, r.last_checkpoint.empty() ? "(none yet)" : r.last_checkpoint);
  return 3;
}

// Validation metrics into `row`; returns whether they set a new best. The
// text for the log line goes to `text`.
bool evaluate(Run& r, nlohmann::json& row, std::string& text) {
  if (!r.root) return false;  // rank 0 evaluates alone
  const std::map<std::string, double> metrics = r.task->evaluate();  // returns early on a stop request
  if (stop_requested()) {
    r.log->info("step {}: evaluation interrupted by signal {}; its partial results are discarded", r.step,
                stop_signal());
    return false;
  }
  for (const auto& [name, value] : metrics) {
    row[name] = value;
    text += fmt::format(" | {} {:.4f}", name == "val_loss" ? "val" : name, value);
  }
  TFM_CHECK(row.contains(r.best_metric), "the task did not report ", r.best_metric);
  const double v = row[r.best_metric].get<double>();
  const bool is_best = higher_is_better(r.best_metric) ? v > r.best_val : v < r.best_val;
  if (is_best) r.best_val = v;
  return is_best;
}

// The training part of a logged or evaluated step's metrics row, measured
// before any evaluation so throughput counts training only.
void training_row(const Run& r, const StepResult& s, const Window& w, nlohmann::json& row) {
  const auto now = std::chrono::steady_clock::now();
  const double wsec = std::chrono::duration<double>(now - w.start).count();
  row["step"] = s.step;
  row["train_loss"] = w.loss / static_cast<double>(w.steps);
  row["lr"] = s.lr;
  row["grad_norm"] = s.grad_norm;
  row["tokens_per_s"] = wsec > 0 ? static_cast<double>(w.tokens) / wsec : 0.0;
  row["elapsed_s"] = r.elapsed_before + std::chrono::duration<double>(now - r.start).count();
  row["step_time_s"] = wsec / static_cast<double>(w.steps);
  if (dist::size() > 1) {
    row["ranks"] = dist::size();
    row["comm_wait_s"] = w.comm_wait_s / static_cast<double>(w.steps);  // per step, not hidden behind backward
    row["buckets_overlapped"] = s.overlapped;                             // of this step, started during backward
  }
  row["window_s"] = wsec;           // training time of the window (bench/train_throughput sums it)
  row["window_tokens"] = w.tokens;  // tokens trained in it, as counted by the task
  const core::MemoryStats mem = core::memory_stats();
  row["peak_mem_bytes"] = mem.peak_bytes;          // live tensors, peak
  row["reserved_mem_bytes"] = mem.reserved_bytes;  // tensors + allocator cache
  row["os_allocs"] = mem.os_allocs;                // allocator blocks taken from the OS so far
  row["os_frees"] = mem.os_frees;                  // and given back
  row["rss_bytes"] = resident_bytes();             // the whole process
}

// Appends the row to the metrics, writes the log line and restarts the window.
void log_row(Run& r, const StepResult& s, Window& w, nlohmann::json row, const std::string& eval_text) {
  if (!r.root) {
    w = Window{};
    return;
  }
  const double step_time = row["step_time_s"].get<double>();
  row.erase("step_time_s");
  append_metrics(r, row);
  if (r.tty) std::fprintf(stderr, "\r\033[K");
  r.log->info(
      "step {:>6}/{} | loss {:.4f}{} | lr {:.3e} | grad norm {:.3f} | {:.0f} tok/s | peak mem {:.1f} MB | rss {:.0f} MB "
      "| ETA {}",
      s.step, r.loop.max_steps, row["train_loss"].get<double>(), eval_text, s.lr, s.grad_norm,
      row["tokens_per_s"].get<double>(), static_cast<double>(row["peak_mem_bytes"].get<int64_t>()) / 1e6,
      static_cast<double>(row["rss_bytes"].get<int64_t>()) / 1e6,
      fmt_duration(step_time * static_cast<double>(r.loop.max_steps - s.step)));
  w = Window{};
}

// Logging, evaluation and the checkpoint policy after a step. Evaluation
// runs every train.eval_every steps and at the last step (never when
// eval_every is 0); a new best is always written, otherwise checkpoints
// follow train.checkpoint_every and the last step. Returns whether a
// checkpoint was written.
bool report_and_checkpoint(Run& r, const StepResult& s, Window& w) {
  const LoopSettings& L = r.loop;
  const bool last = s.step == L.max_steps;
  const bool ckpt_step = L.ckpt_every > 0 && s.step % L.ckpt_every == 0;
  const bool do_log = s.step % L.log_every == 0 || last;
  const bool do_eval = L.eval_every > 0 && (s.step % L.eval_every == 0 || last);
  bool saved = false;
  if (do_log || do_eval) {
    nlohmann::json row;
    training_row(r, s, w, row);
    std::string eval_text;
    bool is_best = do_eval && evaluate(r, row, eval_text);
    if (dist::size() > 1 && do_eval) {  // the others wait here while rank 0 evaluates
      int64_t best = is_best;
      dist::bcast(&best, sizeof best, 0, "the broadcast of rank 0's evaluation result");
      is_best = best != 0;
    }
    log_row(r, s, w, std::move(row), eval_text);
    if (is_best || ckpt_step || last) {
      save(r, is_best);
      saved = true;
    }
  } else if (ckpt_step) {
    save(r, false);
    saved = true;
  }
  if (r.tty)
    std::fprintf(stderr, "\r\033[Kstep %lld/%lld loss %.4f", static_cast<long long>(s.step),
                 static_cast<long long>(L.max_steps), s.loss);
  return saved;
}

int stop_on_signal(Run& r, int sig, bool saved) {
  if (r.tty) std::fprintf(stderr, "\r\033[K");
  if (!saved) save(r, false);
  if (r.log_file) r.log_file->check();
  r.log->info("interrupted by signal {} after step {}; checkpoint saved to {}. Resume with: tfm train --resume {}", sig,
              r.step, r.last_checkpoint, r.out_dir.string());
  // The other ranks wait for rank 0's checkpoint and log line: a rank that exits
  // first makes mpirun kill the rest, which may still be writing.
  if (dist::size() > 1) {
    int64_t done = 1;
    dist::allreduce_max(&done, 1, "the end of the interrupted run");
  }
  return 0;
}

void finish(const Run& r) {
  if (r.tty) std::fprintf(stderr, "\r\033[K");
  r.log->info("done: {} steps, best {} {:.4f}, checkpoint {}", r.step, r.best_metric, r.best_val, r.last_checkpoint);
}

}  // namespace

std::string resolve_checkpoint(const std::string& path) {
  if (fs::is_directory(path)) {
    const fs::path last = fs::path(path) / "last.h5";
    TFM_CHECK(fs::is_regular_file(last), path, ": a run directory without last.h5 (nothing to resume from)");
    return last.string();
  }
  if (!fs::exists(path)) detail::throw_error(path, ": no such checkpoint file or run directory");
  check_regular_file(path, "checkpoint");
  return path;
}

namespace {

int train_process(const TrainArgs& args) {
  StopSignalScope signals;  // a signal from here on asks the loop to stop (tfm installs it in main already)
  Run r;
  r.root = dist::rank() == 0;
  const Resume resume = find_resume(args);
  r.cfg = resolve_config(args, resume);  // everything is validated before anything is allocated or written
  dist::set_timeout(r.cfg.get_float("train.collective_timeout_s"));
  setup(r, resume);
  check_ranks_agree(r.cfg.to_yaml(), r.task->model().named_parameters());
  if (resume.active()) restore(r, resume);
  open_run_dir(r, resume, args.quiet);
  announce(r, resume);
  if (dist::size() > 1)
    r.log->info("data-parallel over {} ranks: {} gradient buckets, global batch split across ranks{}", dist::size(),
                r.sync->buckets(),
                r.zero ? fmt::format(", optimizer state sharded (rank 0 keeps {} of {} parameters' state)",
                                     r.zero->owned_elements(), r.task->model().num_parameters())
                       : std::string());
  if (r.log_file) r.log_file->check();
  if (r.step >= r.loop.max_steps) {
    r.log->info("nothing to do: step {} already reached train.max_steps = {}", r.step, r.loop.max_steps);
    return 0;
  }
  r.start = std::chrono::steady_clock::now();
  Window window;
  core::reset_peak_memory();
  memory_check(r);
  bool saved = false;
  StepProfiler profiler(r.cfg.get_int("train.profile"));
  while (r.step < r.loop.max_steps) {
    int64_t sig = stop_signal();  // also one during start-up; the ranks stop together
    if (dist::size() > 1) dist::allreduce_max(&sig, 1, "the agreement on a stop signal");
    if (sig != 0) return stop_on_signal(r, static_cast<int>(sig), saved);
    const StepResult s =
        core::with_oom_context("training step " + std::to_string(r.step + 1), [&] { return profiler.run(r, window); });
    if (!s.finite && !r.loop.skip_nonfinite) return stop_nonfinite(r, s);
    saved = report_and_checkpoint(r, s, window);
    if (r.log_file) r.log_file->check();
  }
  finish(r);
  return 0;
}

}  // namespace

int run_train(const TrainArgs& args) {
  dist::init();  // MPI, when a launcher started this process (dist/comm.h)
  if (dist::size() == 1) return train_process(args);
  // One rank failing alone would leave the others waiting in a collective:
  // it takes the job down with its message. Failures every rank reaches
  // together (the ranks disagree) end each rank normally with status 1.
  try {
    return train_process(args);
  } catch (const RanksDisagree&) {
    throw;
  } catch (const std::exception& e) {
    dist::abort(1, e.what());
  }
}

}  // namespace tfm::train
