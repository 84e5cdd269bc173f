#include "tools/tools_cli.h"

#include <CLI/CLI.hpp>

#include <cstdint>
#include <iostream>
#include <limits>
#include <new>
#include <string>

#include "core/allocator.h"
#include "tools/corpus.h"
#include "tools/evaluate.h"
#include "tools/generate.h"
#include "tools/inspect.h"
#include "tools/plot.h"
#include "train/config.h"
#include "train/signals.h"
#include "train/trainer.h"

namespace tfm::train {

struct Commands {
  CLI::App* train_cmd = nullptr;
  CLI::App* help_cmd = nullptr;
  CLI::App* sample_cmd = nullptr;
  CLI::App* translate_cmd = nullptr;
  CLI::App* eval_cmd = nullptr;
  CLI::App* prep_cmd = nullptr;
  CLI::App* inspect_cmd = nullptr;
  CLI::App* diff_cmd = nullptr;
  CLI::App* plot_cmd = nullptr;
  TrainArgs train;
  bool markdown = false;
  SampleArgs sample;
  TranslateArgs translate;
  EvalArgs eval;
  std::string cache_dir = "data/cache";
  InspectArgs inspect;
  DiffArgs diff;
  PlotArgs plot;
};

namespace {

// The allowed ranges of the numeric flags, enforced by CLI11 before the
// value is converted, so a negative seed or 10^20 tokens is refused with the
// flag and its range ("--tokens: Value 1e20 not in range 0 to 1000000").
constexpr int64_t kMaxTokens = 1000000;
constexpr int64_t kMaxBeam = 64;
constexpr int64_t kMaxBatch = 4096;
const CLI::Range kSeedRange(int64_t{0}, std::numeric_limits<int64_t>::max());
const CLI::Range kTokensRange(int64_t{0}, kMaxTokens);
const CLI::Range kBeamRange(int64_t{1}, kMaxBeam);
const CLI::Range kBatchRange(int64_t{1}, kMaxBatch);
const CLI::Range kLengthPenaltyRange(0.0, 10.0);

void add_train(CLI::App& app, Commands& c) {
  TrainArgs& t = c.train;
  c.train_cmd = app.add_subcommand("train", "train a model from a YAML config");
  c.train_cmd->add_option("config", t.config_path, "YAML config file (see tfm help-config)");
  c.train_cmd->add_option("--resume", t.resume, "continue from a checkpoint file or run directory");
  c.train_cmd->add_option("--set", t.overrides, "override a config key: --set train.max_steps=100 (repeatable)")
      ->allow_extra_args(false);
  c.train_cmd
      ->add_option_function<int64_t>(
          "--profile", [&t](int64_t n) { t.overrides.push_back("train.profile=" + std::to_string(n)); },
          "time N steps per op kind and log the table (same as --set train.profile=N)")
      ->check(CLI::Range(int64_t{0}, int64_t{1000000000000}));
  c.help_cmd = app.add_subcommand("help-config", "list every config key with its default and meaning");
  c.help_cmd->add_flag("--markdown", c.markdown, "print a Markdown table");
}

void add_use(CLI::App& app, Commands& c) {
  SampleArgs& s = c.sample;
  c.sample_cmd = app.add_subcommand("sample", "generate text from a GPT checkpoint");
  c.sample_cmd->add_option("checkpoint", s.checkpoint, "checkpoint file or run directory")->required();
  c.sample_cmd->add_option("--prompt", s.prompt, "text to continue (default: a newline)");
  c.sample_cmd->add_option("--tokens", s.tokens, "tokens to generate (default 500)")->check(kTokensRange);
  c.sample_cmd->add_option("--temperature", s.sampling.temperature, "0 is greedy (default 1)")->check(CLI::Range(0.0, 100.0));
  c.sample_cmd->add_option("--top-k", s.sampling.top_k, "sample among the k most likely tokens (0: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 24));
  c.sample_cmd->add_option("--top-p", s.sampling.top_p, "nucleus sampling threshold in (0, 1] (default 1)")
      ->check(CLI::Range(0.0, 1.0));
  c.sample_cmd->add_option("--seed", s.seed, "random seed (default 0)")->check(kSeedRange);

  TranslateArgs& tr = c.translate;
  c.translate_cmd = app.add_subcommand("translate", "translate lines with a seq2seq checkpoint");
  c.translate_cmd->add_option("checkpoint", tr.checkpoint, "checkpoint file or run directory")->required();
  c.translate_cmd->add_option("--input", tr.input, "file with one source sentence per line (default: stdin)");
  c.translate_cmd->add_option("--beam", tr.beam, "beam size; 1 is greedy (default 4)")->check(kBeamRange);
  c.translate_cmd->add_option("--length-penalty", tr.length_penalty, "GNMT length penalty alpha (default 1)")
      ->check(kLengthPenaltyRange);
  c.translate_cmd->add_option("--max-len-ratio", tr.max_len_ratio, "output length limit per source token (default 1.5)")
      ->check(CLI::Range(0.0, 16.0));
  c.translate_cmd->add_option("--batch-size", tr.batch_size, "sentences per batch (default 32)")->check(kBatchRange);

  EvalArgs& ev = c.eval;
  c.eval_cmd = app.add_subcommand("eval", "loss, perplexity (and BLEU) of a checkpoint on a data split");
  c.eval_cmd->add_option("checkpoint", ev.checkpoint, "checkpoint file or run directory")->required();
  c.eval_cmd->add_option("--split", ev.split, "valid or test (default valid)")
      ->check(CLI::IsMember({"valid", "test"}));
  c.eval_cmd->add_option("--data", ev.data, "evaluate on this file instead (text for gpt, TSV for seq2seq)");
  c.eval_cmd->add_option("--beam", ev.beam, "translation: beam size for BLEU (default 4)")->check(kBeamRange);
  c.eval_cmd->add_option("--length-penalty", ev.length_penalty, "translation: length penalty (default 1)")
      ->check(kLengthPenaltyRange);
  c.eval_cmd->add_option("--batch-size", ev.batch_size, "windows or sentences per batch (default 32)")
      ->check(kBatchRange);

  c.prep_cmd = app.add_subcommand(
      "prepare-data", "extract the KJV text and English-Spanish verse pairs from the Debian Bible packages");
  c.prep_cmd->add_option("--cache", c.cache_dir, "output directory (default data/cache)");
}

void add_inspection(CLI::App& app, Commands& c) {
  InspectArgs& i = c.inspect;
  c.inspect_cmd = app.add_subcommand(
      "inspect", "summarise a checkpoint: model, parameter statistics, training state; or draw attention maps");
  c.inspect_cmd->add_option("checkpoint", i.checkpoint, "checkpoint file or run directory")->required();
  c.inspect_cmd->add_flag("--json", i.json, "print everything as one JSON object");
  c.inspect_cmd->add_flag("--config", i.show_config, "also print the resolved config");
  c.inspect_cmd->add_option("--tensor", i.tensor, "print the values of one tensor (parameter or optimizer state)");
  c.inspect_cmd->add_flag("--full", i.full, "with --tensor: print every value");
  c.inspect_cmd->add_option("--filter", i.filter, "only parameters whose name matches this glob, e.g. 'decoder.layers.0.*'");
  c.inspect_cmd->add_flag("--attention", i.attention, "write per-layer, per-head attention maps as SVG files");
  c.inspect_cmd->add_option("--text", i.text, "with --attention, gpt: the text to run");
  c.inspect_cmd->add_option("--source", i.source, "with --attention, seq2seq: the source sentence");
  c.inspect_cmd->add_option("--target", i.target, "with --attention, seq2seq: the target sentence (teacher-forced)");
  c.inspect_cmd->add_option("--out", i.out_dir, "with --attention: output directory (default attention_maps)");

  c.diff_cmd = app.add_subcommand("diff", "compare two checkpoints: parameter changes, shapes, config keys");
  c.diff_cmd->add_option("a", c.diff.a, "first checkpoint file or run directory")->required();
  c.diff_cmd->add_option("b", c.diff.b, "second checkpoint file or run directory")->required();
  c.diff_cmd->add_flag("--json", c.diff.json, "print the comparison as JSON");
  c.diff_cmd->add_option("--filter", c.diff.filter, "only parameters whose name matches this glob");

  c.plot_cmd = app.add_subcommand("plot", "draw training curves of one or more runs (metrics.jsonl) as one SVG");
  c.plot_cmd->add_option("runs", c.plot.runs, "run directories or metrics.jsonl files")->required();
  c.plot_cmd->add_option("--out", c.plot.out, "output SVG file (default training_curves.svg)");
}

}  // namespace

std::shared_ptr<Commands> add_commands(CLI::App& app) {
  auto c = std::make_shared<Commands>();
  add_train(app, *c);
  add_use(app, *c);
  add_inspection(app, *c);
  return c;
}

namespace {

int parse_and_dispatch(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err) {
  CLI::App app{"tfm: train and use Transformer models on CPUs"};
  app.require_subcommand(1);
  const auto commands = add_commands(app);
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
    names += (names.empty() ? "" : ", ") + sub->get_name();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == static_cast<int>(CLI::ExitCodes::Success)) return app.exit(e, out, err);  // --help: 0
    std::string msg = e.what();
    if (app.get_subcommands().empty()) {  // no command, or an unknown one
      if (argc <= 1)
        msg = "a command is required";
      else if (argv[1][0] != '-')
        msg = "unknown command '" + std::string(argv[1]) + "'";
      else
        msg = "'" + std::string(argv[1]) + "' is not an option of tfm itself; give a command first";
      msg += "; the commands are: " + names + " (tfm --help, or tfm COMMAND --help)";
    }
    err << "tfm: error: " << msg << "\n";
    return 1;
  }
  if (!app.got_subcommand("train")) release_stop_handlers();  // Ctrl-C stops other commands at once
  try {
    return run_command(*commands, in, out);
  } catch (const std::bad_alloc&) {  // from a place that did not say what it was allocating
    std::string cmd;
    for (const CLI::App* sub : app.get_subcommands()) cmd = sub->get_name();
    err << "tfm: error: out of memory in tfm " << cmd << " (std::bad_alloc: the system refused memory outside tensor storage; "
        << core::memory_summary() << ")\n";
    return 1;
  } catch (const std::exception& e) {  // tfm::Error and anything else: one line, status 1
    err << "tfm: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace

int parse_and_run(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err) {
  try {
    return parse_and_dispatch(argc, argv, in, out, err);
  } catch (const std::bad_alloc&) {  // while building or parsing the command line (a command's own is caught inside)
    err << "tfm: error: out of memory (std::bad_alloc) while parsing the command line\n";
    return 1;
  }
}

int run_command(const Commands& c, std::istream& in, std::ostream& out) {
  if (*c.train_cmd) return run_train(c.train);
  if (*c.help_cmd) out << (c.markdown ? help_markdown() : help_text());
  if (*c.sample_cmd) run_sample(c.sample, out);
  if (*c.translate_cmd) run_translate(c.translate, in, out);
  if (*c.eval_cmd) run_eval(c.eval, out);
  if (*c.prep_cmd) data::prepare_corpora(c.cache_dir);
  if (*c.inspect_cmd) run_inspect(c.inspect, out);
  if (*c.diff_cmd) run_diff(c.diff, out);
  if (*c.plot_cmd) run_plot(c.plot, out);
  return 0;
}

}  // namespace tfm::train
