// The Reformer's duplication task (Kitaev et al. 2020, Table 2) at this
// machine's scale: a random sequence w of symbols 1 .. V−1, the input
// 0 w 0 w, next-token loss and accuracy on the second copy only (its
// symbols can be copied from the first, which is beyond a chunk's reach).
//
//   OMP_WAIT_POLICY=PASSIVE nice build/bench/bench_duplication [--steps N] [--len N] [--vocab V]
//       [--layers L] [--d-model D] [--heads H] [--chunk C] [--batch B] [--lr LR] [--eval N] [--seed S]
//       [--train full,LSH-1,LSH-2,LSH-4]
//
// Trains one GPT per setting with shared-QK attention (model.attention =
// lsh): "full" is the lsh backend with one chunk covering the sequence,
// which is exactly full shared-QK attention (causal, a token attends to
// itself only when nothing else is visible), and LSH-1/2/4 use chunks of C
// and 1, 2, 4 hashing rounds. Every trained model is then evaluated, with
// its weights unchanged, under full attention and LSH with 1, 2, 4 and 8
// rounds on held-out sequences (a different seed stream than training),
// and the accuracy table is printed next to the paper's numbers.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/rng.h"
#include "layers/gpt.h"
#include "optim/optimizer.h"
#include "optim/schedule.h"

namespace core = tfm::core;
namespace layers = tfm::layers;
namespace optim = tfm::optim;
using core::Tensor;

namespace {

struct Settings {
  int64_t steps = 1500, len = 63, vocab = 32, layers = 1, d_model = 128, heads = 4, chunk = 16, batch = 16;
  int64_t eval = 256;
  float lr = 1e-3f;
  uint64_t seed = 1;
  std::string train = "full,LSH-1,LSH-2,LSH-4";  // the settings to train
};

constexpr int32_t kIgnore = -100;

// A batch of B sequences 0 w 0 w (|w| = len): inputs [B, 2·len + 1], targets
// the next tokens, kIgnore except where the second copy is predicted.
void make_batch(const Settings& s, core::Generator& gen, int64_t B, Tensor& ids, Tensor& targets) {
  const int64_t T = 2 * s.len + 1;
  std::vector<int32_t> in(static_cast<size_t>(B * T)), tg(static_cast<size_t>(B * T), kIgnore);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> full(static_cast<size_t>(T + 1));
    for (int64_t i = 0; i < s.len; ++i) {
      const auto sym = static_cast<int32_t>(1 + gen.next_u64() % static_cast<uint64_t>(s.vocab - 1));
      full[1 + i] = full[s.len + 2 + i] = sym;
    }
    full[0] = full[s.len + 1] = 0;
    for (int64_t t = 0; t < T; ++t) {
      in[b * T + t] = full[t];
      if (t >= s.len + 1) tg[b * T + t] = full[t + 1];  // predicting w_0 .. w_{len−1} of the second copy
    }
  }
  ids = core::from_vector(in, {B, T});
  targets = core::from_vector(tg, {B, T});
}

layers::GPTConfig model_config(const Settings& s, int64_t chunk, int64_t n_hashes) {
  layers::GPTConfig c;
  c.vocab_size = s.vocab;
  c.block_size = 2 * s.len + 1;
  c.n_layers = s.layers, c.n_heads = s.heads, c.d_model = s.d_model;
  c.positions = layers::PositionKind::learned;
  c.attention = "lsh";
  c.attention_options.chunk_length = chunk;
  c.attention_options.n_hashes = n_hashes;
  return c;
}

// chunk and rounds of a setting: "full" = one chunk covering the sequence.
struct Mode {
  const char* name;
  bool full;
  int64_t n_hashes;
};

int64_t chunk_of(const Settings& s, const Mode& m) { return m.full ? 2 * s.len + 1 : s.chunk; }

double accuracy(const layers::GPT& model, const Settings& s) {
  core::NoGradGuard no_grad;
  core::Generator data(s.seed * 7919 + 1234567);  // held out: not the training stream
  int64_t right = 0, total = 0;
  const int64_t B = 32;
  for (int64_t done = 0; done < s.eval; done += B) {
    Tensor ids, targets;
    make_batch(s, data, B, ids, targets);
    const Tensor logits = model.forward(ids).contiguous();
    const float* lp = logits.data<float>();
    const auto tg = targets.to_int_vector();
    for (std::size_t i = 0; i < tg.size(); ++i) {
      if (tg[i] == kIgnore) continue;
      const float* row = lp + static_cast<int64_t>(i) * s.vocab;
      int32_t best = 0;
      for (int32_t v = 1; v < s.vocab; ++v)
        if (row[v] > row[best]) best = v;
      right += best == tg[i];
      ++total;
    }
  }
  return 100.0 * double(right) / double(total);
}

void copy_parameters(const layers::Module& from, layers::Module& to) {
  core::NoGradGuard no_grad;
  const auto src = from.named_parameters();
  auto dst = to.named_parameters();
  for (std::size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second);
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--steps") s.steps = std::atoll(v);
    else if (k == "--len") s.len = std::atoll(v);
    else if (k == "--vocab") s.vocab = std::atoll(v);
    else if (k == "--layers") s.layers = std::atoll(v);
    else if (k == "--d-model") s.d_model = std::atoll(v);
    else if (k == "--heads") s.heads = std::atoll(v);
    else if (k == "--chunk") s.chunk = std::atoll(v);
    else if (k == "--batch") s.batch = std::atoll(v);
    else if (k == "--eval") s.eval = std::atoll(v);
    else if (k == "--lr") s.lr = static_cast<float>(std::atof(v));
    else if (k == "--seed") s.seed = std::strtoull(v, nullptr, 10);
    else if (k == "--train") s.train = v;
    else {
      std::fprintf(stderr, "bench_duplication: unknown option '%s'\n", k.c_str());
      return 1;
    }
  }
  const int64_t T = 2 * s.len + 1;
  std::printf("duplication: |w| = %lld, input length %lld, %lld symbols, %lld layer(s), d_model %lld, %lld heads, "
              "chunk %lld, batch %lld, %lld steps, AdamW lr %g (cosine, 5%% warmup), eval on %lld held-out "
              "sequences\n",
              (long long)s.len, (long long)T, (long long)(s.vocab - 1), (long long)s.layers, (long long)s.d_model,
              (long long)s.heads, (long long)s.chunk, (long long)s.batch, (long long)s.steps, s.lr,
              (long long)s.eval);
  std::vector<Mode> train_modes;
  for (const Mode& m : std::vector<Mode>{{"full", true, 1}, {"LSH-1", false, 1}, {"LSH-2", false, 2},
                                         {"LSH-4", false, 4}})
    if (("," + s.train + ",").find("," + std::string(m.name) + ",") != std::string::npos) train_modes.push_back(m);
  if (train_modes.empty()) {
    std::fprintf(stderr, "bench_duplication: --train '%s' names none of full, LSH-1, LSH-2, LSH-4\n", s.train.c_str());
    return 1;
  }
  const std::vector<Mode> eval_modes = {
      {"full", true, 1}, {"LSH-8", false, 8}, {"LSH-4", false, 4}, {"LSH-2", false, 2}, {"LSH-1", false, 1}};
  std::vector<std::vector<double>> table;
  for (const Mode& tm : train_modes) {
    layers::GPT model(model_config(s, chunk_of(s, tm), tm.n_hashes), s.seed);
    optim::Adam opt(optim::decay_groups(model.named_parameters(), 0.0f), s.lr, 0.9f, 0.98f, 1e-9f, true);
    optim::Schedule sched;
    sched.kind = optim::ScheduleKind::cosine, sched.lr = s.lr, sched.warmup = std::max<int64_t>(1, s.steps / 20);
    sched.total = s.steps, sched.min_lr = s.lr / 10;
    core::Generator data(s.seed * 104729 + 17);
    const auto t0 = std::chrono::steady_clock::now();
    double avg = 0;
    for (int64_t step = 1; step <= s.steps; ++step) {
      Tensor ids, targets;
      make_batch(s, data, s.batch, ids, targets);
      Tensor loss = core::cross_entropy(model.forward(ids).reshape({-1, s.vocab}), targets.reshape({-1}), kIgnore);
      opt.zero_grad();
      loss.backward();
      optim::clip_grad_norm(model.parameters(), 1.0f);
      opt.set_lr(sched.lr_at(step));
      opt.step();
      avg = step == 1 ? loss.item() : 0.98 * avg + 0.02 * loss.item();
      if (step % std::max<int64_t>(1, s.steps / 10) == 0 || step == s.steps) {
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("  train %-5s step %6lld  loss %.4f  (%.0f s)\n", tm.name, (long long)step, avg, el);
        std::fflush(stdout);
      }
    }
    model.eval();
    std::vector<double> row;
    for (const Mode& em : eval_modes) {
      layers::GPT evaluator(model_config(s, chunk_of(s, em), em.n_hashes), s.seed);
      copy_parameters(model, evaluator);
      evaluator.eval();
      row.push_back(accuracy(evaluator, s));
    }
    table.push_back(row);
  }
  std::printf("\naccuracy (%%) on the second copy, held-out sequences\n| train \\ eval |");
  for (const Mode& em : eval_modes) std::printf(" %s |", em.name);
  std::printf("\n|---|---|---|---|---|---|\n");
  for (std::size_t r = 0; r < table.size(); ++r) {
    std::printf("| %s |", train_modes[r].name);
    for (double a : table[r]) std::printf(" %.1f |", a);
    std::printf("\n");
  }
  std::printf("| paper, full (length of w 511, 150k steps) | 100 | | | | |\n");
  std::printf("| paper, LSH-4 (length of w 511, 150k steps) | | 100 | 99.9 | 99.4 | 91.9 |\n");
  return 0;
}
