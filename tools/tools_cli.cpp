#include "tools/tools_cli.h"

#include <CLI/CLI.hpp>

#include "tools/inspect.h"
#include "tools/plot.h"

namespace tfm::train {

struct ToolCommands {
  CLI::App* inspect_cmd = nullptr;
  CLI::App* diff_cmd = nullptr;
  CLI::App* plot_cmd = nullptr;
  InspectArgs inspect;
  DiffArgs diff;
  PlotArgs plot;
};

std::shared_ptr<ToolCommands> add_tool_commands(CLI::App& app) {
  auto t = std::make_shared<ToolCommands>();
  InspectArgs& i = t->inspect;
  t->inspect_cmd = app.add_subcommand(
      "inspect", "summarise a checkpoint: model, parameter statistics, training state; or draw attention maps");
  t->inspect_cmd->add_option("checkpoint", i.checkpoint, "checkpoint file or run directory")->required();
  t->inspect_cmd->add_flag("--json", i.json, "print everything as one JSON object");
  t->inspect_cmd->add_flag("--config", i.show_config, "also print the resolved config");
  t->inspect_cmd->add_option("--tensor", i.tensor, "print the values of one tensor (parameter or optimizer state)");
  t->inspect_cmd->add_flag("--full", i.full, "with --tensor: print every value");
  t->inspect_cmd->add_option("--filter", i.filter, "only parameters whose name matches this glob, e.g. 'decoder.layers.0.*'");
  t->inspect_cmd->add_flag("--attention", i.attention, "write per-layer, per-head attention maps as SVG files");
  t->inspect_cmd->add_option("--text", i.text, "with --attention, gpt: the text to run");
  t->inspect_cmd->add_option("--source", i.source, "with --attention, seq2seq: the source sentence");
  t->inspect_cmd->add_option("--target", i.target, "with --attention, seq2seq: the target sentence (teacher-forced)");
  t->inspect_cmd->add_option("--out", i.out_dir, "with --attention: output directory (default attention_maps)");

  t->diff_cmd = app.add_subcommand("diff", "compare two checkpoints: parameter changes, shapes, config keys");
  t->diff_cmd->add_option("a", t->diff.a, "first checkpoint file or run directory")->required();
  t->diff_cmd->add_option("b", t->diff.b, "second checkpoint file or run directory")->required();
  t->diff_cmd->add_flag("--json", t->diff.json, "print the comparison as JSON");
  t->diff_cmd->add_option("--filter", t->diff.filter, "only parameters whose name matches this glob");

  t->plot_cmd = app.add_subcommand("plot", "draw training curves of one or more runs (metrics.jsonl) as one SVG");
  t->plot_cmd->add_option("runs", t->plot.runs, "run directories or metrics.jsonl files")->required();
  t->plot_cmd->add_option("--out", t->plot.out, "output SVG file (default training_curves.svg)");
  return t;
}

std::optional<int> run_tool_commands(const ToolCommands& t, std::ostream& out) {
  if (*t.inspect_cmd) {
    run_inspect(t.inspect, out);
    return 0;
  }
  if (*t.diff_cmd) {
    run_diff(t.diff, out);
    return 0;
  }
  if (*t.plot_cmd) {
    run_plot(t.plot, out);
    return 0;
  }
  return std::nullopt;
}

}  // namespace tfm::train
