// The tfm command line: parses the command and dispatches; nothing else.
#include <CLI/CLI.hpp>

#include <iostream>

#include "core/error.h"
#include "train/config.h"
#include "train/generate.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"tfm: train and use Transformer models on CPUs"};
  app.require_subcommand(1);

  tfm::train::TrainArgs train;
  CLI::App* train_cmd = app.add_subcommand("train", "train a model from a YAML config");
  train_cmd->add_option("config", train.config_path, "YAML config file (see tfm help-config)");
  train_cmd->add_option("--resume", train.resume, "continue from a checkpoint file or run directory");
  train_cmd->add_option("--set", train.overrides, "override a config key: --set train.max_steps=100 (repeatable)");

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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (*train_cmd) return tfm::train::run_train(train);
    if (*help_cmd) {
      std::cout << (markdown ? tfm::train::help_markdown() : tfm::train::help_text());
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
