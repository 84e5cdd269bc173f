// The tfm command line: parses the command and dispatches; nothing else.
#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cstdlib>
#include <iostream>

#include "core/error.h"
#include "tools/corpus.h"
#include "train/config.h"
#include "tools/evaluate.h"
#include "tools/generate.h"
#include "tools/tools_cli.h"
#include "train/trainer.h"

namespace {
// libgomp's default wait policy spins idle threads for a while after each
// parallel region; when another process holds a core, that spinning steals
// the time the working thread needs and small regions collapse (measured
// here: 73% of a training step in libgomp under load). tfm defaults to the
// passive policy unless the user chose one. libgomp reads the variable only
// when it loads, so the process re-executes itself once with it set.
void default_to_passive_omp_wait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: carry on with the default policy
}
}  // namespace

int main(int argc, char** argv) {
  default_to_passive_omp_wait(argv);
  CLI::App app{"tfm: train and use Transformer models on CPUs"};
  app.require_subcommand(1);

  tfm::train::TrainArgs train;
  CLI::App* train_cmd = app.add_subcommand("train", "train a model from a YAML config");
  train_cmd->add_option("config", train.config_path, "YAML config file (see tfm help-config)");
  train_cmd->add_option("--resume", train.resume, "continue from a checkpoint file or run directory");
  train_cmd->add_option("--set", train.overrides, "override a config key: --set train.max_steps=100 (repeatable)")
      ->allow_extra_args(false);

  bool markdown = false;
  CLI::App* help_cmd = app.add_subcommand("help-config", "list every config key with its default and meaning");
  help_cmd->add_flag("--markdown", markdown, "print a Markdown table");

  tfm::train::SampleArgs sample;
  CLI::App* sample_cmd = app.add_subcommand("sample", "generate text from a GPT checkpoint");
  sample_cmd->add_option("checkpoint", sample.checkpoint, "checkpoint file or run directory")->required();
  sample_cmd->add_option("--prompt", sample.prompt, "text to continue (default: a newline)");
  sample_cmd->add_option("--tokens", sample.tokens, "tokens to generate (default 500)");
  sample_cmd->add_option("--temperature", sample.sampling.temperature, "0 is greedy (default 1)");
  sample_cmd->add_option("--top-k", sample.sampling.top_k, "sample among the k most likely tokens (0: all)");
  sample_cmd->add_option("--top-p", sample.sampling.top_p, "nucleus sampling threshold in (0, 1] (default 1)");
  sample_cmd->add_option("--seed", sample.seed, "random seed (default 0)");

  tfm::train::TranslateArgs tr;
  CLI::App* translate_cmd = app.add_subcommand("translate", "translate lines with a seq2seq checkpoint");
  translate_cmd->add_option("checkpoint", tr.checkpoint, "checkpoint file or run directory")->required();
  translate_cmd->add_option("--input", tr.input, "file with one source sentence per line (default: stdin)");
  translate_cmd->add_option("--beam", tr.beam, "beam size; 1 is greedy (default 4)");
  translate_cmd->add_option("--length-penalty", tr.length_penalty, "GNMT length penalty alpha (default 1)");
  translate_cmd->add_option("--max-len-ratio", tr.max_len_ratio, "output length limit per source token (default 1.5)");
  translate_cmd->add_option("--batch-size", tr.batch_size, "sentences per batch (default 32)");

  tfm::train::EvalArgs ev;
  CLI::App* eval_cmd = app.add_subcommand("eval", "loss, perplexity (and BLEU) of a checkpoint on a data split");
  eval_cmd->add_option("checkpoint", ev.checkpoint, "checkpoint file or run directory")->required();
  eval_cmd->add_option("--split", ev.split, "valid or test (default valid)");
  eval_cmd->add_option("--data", ev.data, "evaluate on this file instead (text for gpt, TSV for seq2seq)");
  eval_cmd->add_option("--beam", ev.beam, "translation: beam size for BLEU (default 4)");
  eval_cmd->add_option("--length-penalty", ev.length_penalty, "translation: length penalty (default 1)");
  eval_cmd->add_option("--batch-size", ev.batch_size, "windows or sentences per batch (default 32)");

  std::string cache_dir = "data/cache";
  CLI::App* prep_cmd = app.add_subcommand(
      "prepare-data", "extract the KJV text and English-Spanish verse pairs from the Debian Bible packages");
  prep_cmd->add_option("--cache", cache_dir, "output directory (default data/cache)");

  const auto tools = tfm::train::add_tool_commands(app);  // inspect, diff, plot

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*train_cmd) return tfm::train::run_train(train);
    if (const auto status = tfm::train::run_tool_commands(*tools, std::cout)) return *status;
    if (*help_cmd) {
      std::cout << (markdown ? tfm::train::help_markdown() : tfm::train::help_text());
      return 0;
    }
    if (*translate_cmd) {
      tfm::train::run_translate(tr, std::cin, std::cout);
      return 0;
    }
    if (*eval_cmd) {
      tfm::train::run_eval(ev, std::cout);
      return 0;
    }
    if (*prep_cmd) {
      tfm::data::prepare_corpora(cache_dir);
      return 0;
    }
    if (*sample_cmd) {
      tfm::train::run_sample(sample, std::cout);
      return 0;
    }
  } catch (const tfm::Error& e) {
    std::cerr << "tfm: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tfm: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
