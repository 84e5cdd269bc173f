// SVG figures without dependencies: training curves (`tfm plot`) and
// attention heatmaps (`tfm inspect --attention`). Every figure is one
// standalone SVG document (XML declaration, xmlns) that opens in a browser.
#pragma once

#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace tfm::train {

// ---- training curves

struct MetricRow {
  int64_t step = 0;
  std::optional<double> train_loss, val_loss, lr, tokens_per_s, elapsed_s;
  std::optional<double> val_bleu, val_chrf, val_exact;  // translation runs with train.eval_bleu
};

struct RunMetrics {
  std::string name;  // legend label (the run directory's name)
  std::string path;  // the metrics.jsonl file read
  std::vector<MetricRow> rows;
};

// Reads RUN_DIR/metrics.jsonl (or a .jsonl file given directly). Rows
// without val_loss are normal; elapsed_s restarts when a run was resumed and
// is made cumulative here. Throws tfm::Error naming the file for a missing
// or empty file and for a malformed line (with its number).
RunMetrics read_run_metrics(const std::string& run_dir_or_file);

// One SVG with four panels: loss against step, loss against elapsed time,
// learning rate against step, tokens/s against step; train loss solid,
// validation loss dashed with markers, one colour per run, and a legend.
// Below them, one panel per validation score any run logged (BLEU, chrF,
// exact match) against step.
std::string render_curves_svg(const std::vector<RunMetrics>& runs);

struct PlotArgs {
  std::vector<std::string> runs;  // run directories or metrics.jsonl files
  std::string out = "training_curves.svg";
};

// Reads every run, writes args.out and reports what it wrote to `out`.
void run_plot(const PlotArgs& args, std::ostream& out);

// ---- heatmaps

struct Heatmap {
  std::string title;
  std::string row_axis, col_axis;             // axis titles, e.g. "query", "key"
  std::vector<std::string> row_labels, col_labels;  // plain UTF-8 text (escaped when written)
  std::vector<float> values;                  // rows × cols, row-major
};

// A heatmap with labelled rows (left) and columns (top), colour scale from 0
// to the largest value, and a colour bar. Throws tfm::Error when the sizes
// do not agree.
std::string render_heatmap_svg(const Heatmap& h);

// ---- helpers

// Escapes &, <, >, " and ' for XML text and attribute values.
std::string xml_escape(std::string_view s);

// Writes text to a file atomically enough for tools (temp file + rename);
// throws naming the path when it cannot.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace tfm::train
