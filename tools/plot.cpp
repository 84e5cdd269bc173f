#include "tools/plot.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.h"
#include "train/posix_file.h"

namespace fs = std::filesystem;

namespace tfm::train {

namespace {

// ---------------------------------------------------------------- small helpers

std::string num(double v, int precision = 1) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", precision, v);
  return buf;
}

std::string tick_text(double v) {
  if (std::fabs(v) < 1e-12) return "0";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

std::size_t utf8_length(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

constexpr std::array<const char*, 10> kPalette = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                                  "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

// Viridis, sampled at 10 evenly spaced points.
constexpr std::array<std::array<int, 3>, 10> kViridis = {{{68, 1, 84},
                                                           {72, 40, 120},
                                                           {62, 73, 137},
                                                           {49, 104, 142},
                                                           {38, 130, 142},
                                                           {31, 158, 137},
                                                           {53, 183, 121},
                                                           {110, 206, 88},
                                                           {181, 222, 43},
                                                           {253, 231, 37}}};

std::string viridis(double t) {
  if (!std::isfinite(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0) * static_cast<double>(kViridis.size() - 1);
  const auto i = std::min(static_cast<std::size_t>(t), kViridis.size() - 2);
  const double f = t - static_cast<double>(i);
  char buf[8];
  int c[3];
  for (int k = 0; k < 3; ++k)
    c[k] = static_cast<int>(std::lround(kViridis[i][k] + f * (kViridis[i + 1][k] - kViridis[i][k])));
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c[0], c[1], c[2]);
  return buf;
}

std::string svg_open(double w, double h) {
  std::ostringstream os;
  os << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
     << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << num(w, 0) << "\" height=\"" << num(h, 0)
     << "\" viewBox=\"0 0 " << num(w, 0) << " " << num(h, 0) << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\">\n"
     << "<rect x=\"0\" y=\"0\" width=\"" << num(w, 0) << "\" height=\"" << num(h, 0) << "\" fill=\"white\"/>\n";
  return os.str();
}

// ---------------------------------------------------------------- axes

struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
};

// A "nice" axis covering [lo, hi] with about five round ticks.
Axis nice_axis(double lo, double hi) {
  if (!(lo <= hi)) lo = 0, hi = 1;
  if (hi - lo < 1e-12 * std::max(1.0, std::fabs(hi))) {
    const double d = lo == 0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= d, hi += d;
  }
  const double raw = (hi - lo) / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1.0 : norm < 3.0 ? 2.0 : norm < 7.0 ? 5.0 : 10.0) * mag;
  Axis a;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  for (double t = a.lo; t <= a.hi + step * 1e-6; t += step) a.ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  return a;
}

struct Series {
  std::vector<std::pair<double, double>> pts;
  std::string color;
  bool dashed = false;
};

struct Panel {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
};

void draw_panel(std::ostream& os, const Panel& p, double x0, double y0, double w, double h, int id) {
  const double ml = 72, mr = 16, mt = 30, mb = 46;
  const double px = x0 + ml, py = y0 + mt, pw = w - ml - mr, ph = h - mt - mb;
  double xlo = std::numeric_limits<double>::infinity(), xhi = -xlo, ylo = xlo, yhi = -xlo;
  for (const Series& s : p.series)
    for (const auto& [x, y] : s.pts) {
      xlo = std::min(xlo, x), xhi = std::max(xhi, x);
      ylo = std::min(ylo, y), yhi = std::max(yhi, y);
    }
  const bool empty = !(xlo <= xhi);
  const Axis ax = empty ? nice_axis(0, 1) : nice_axis(xlo, xhi);
  const Axis ay = empty ? nice_axis(0, 1) : nice_axis(ylo, yhi);
  auto X = [&](double x) { return px + (x - ax.lo) / (ax.hi - ax.lo) * pw; };
  auto Y = [&](double y) { return py + ph - (y - ay.lo) / (ay.hi - ay.lo) * ph; };

  os << "<g>\n<text x=\"" << num(px + pw / 2) << "\" y=\"" << num(y0 + 20)
     << "\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"bold\">" << xml_escape(p.title) << "</text>\n";
  os << "<clipPath id=\"clip" << id << "\"><rect x=\"" << num(px) << "\" y=\"" << num(py) << "\" width=\"" << num(pw)
     << "\" height=\"" << num(ph) << "\"/></clipPath>\n";
  for (double t : ax.ticks) {
    os << "<line x1=\"" << num(X(t)) << "\" y1=\"" << num(py) << "\" x2=\"" << num(X(t)) << "\" y2=\"" << num(py + ph)
       << "\" stroke=\"#e5e5e5\"/>\n";
    os << "<text x=\"" << num(X(t)) << "\" y=\"" << num(py + ph + 16) << "\" text-anchor=\"middle\" font-size=\"11\">"
       << tick_text(t) << "</text>\n";
  }
  for (double t : ay.ticks) {
    os << "<line x1=\"" << num(px) << "\" y1=\"" << num(Y(t)) << "\" x2=\"" << num(px + pw) << "\" y2=\"" << num(Y(t))
       << "\" stroke=\"#e5e5e5\"/>\n";
    os << "<text x=\"" << num(px - 6) << "\" y=\"" << num(Y(t) + 4) << "\" text-anchor=\"end\" font-size=\"11\">"
       << tick_text(t) << "</text>\n";
  }
  os << "<rect x=\"" << num(px) << "\" y=\"" << num(py) << "\" width=\"" << num(pw) << "\" height=\"" << num(ph)
     << "\" fill=\"none\" stroke=\"#444\"/>\n";
  os << "<text x=\"" << num(px + pw / 2) << "\" y=\"" << num(py + ph + 36) << "\" text-anchor=\"middle\" font-size=\"12\">"
     << xml_escape(p.xlabel) << "</text>\n";
  os << "<text transform=\"translate(" << num(x0 + 16) << "," << num(py + ph / 2)
     << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">" << xml_escape(p.ylabel) << "</text>\n";
  if (empty) {
    os << "<text x=\"" << num(px + pw / 2) << "\" y=\"" << num(py + ph / 2)
       << "\" text-anchor=\"middle\" font-size=\"13\" fill=\"#888\">no data</text>\n</g>\n";
    return;
  }
  os << "<g clip-path=\"url(#clip" << id << ")\">\n";
  for (const Series& s : p.series) {
    if (s.pts.empty()) continue;
    if (s.pts.size() > 1) {
      os << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.6\""
         << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << " points=\"";
      for (const auto& [x, y] : s.pts) os << num(X(x)) << "," << num(Y(y)) << " ";
      os << "\"/>\n";
    }
    if (s.dashed || s.pts.size() <= 30)
      for (const auto& [x, y] : s.pts)
        os << "<circle cx=\"" << num(X(x)) << "\" cy=\"" << num(Y(y)) << "\" r=\"" << (s.dashed ? "3" : "2.2")
           << "\" fill=\"" << (s.dashed ? "white" : s.color) << "\" stroke=\"" << s.color << "\"/>\n";
  }
  os << "</g>\n</g>\n";
}

}  // namespace

// ---------------------------------------------------------------- helpers

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default: out += c;
    }
  }
  return out;
}

void write_text_file(const std::string& path, const std::string& text) {
  const fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  TFM_CHECK(!fs::is_directory(p), path, ": is a directory (expected a file name)");
  write_file_atomic(path, text);
}

// ---------------------------------------------------------------- metrics

RunMetrics read_run_metrics(const std::string& arg) {
  std::string trimmed = arg;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const fs::path p(trimmed);
  RunMetrics r;
  fs::path file;
  if (fs::is_directory(p)) {
    file = p / "metrics.jsonl";
    TFM_CHECK(fs::is_regular_file(file), arg, ": no metrics.jsonl in this run directory");
    std::error_code ec;
    const fs::path canon = fs::weakly_canonical(p, ec);
    r.name = (ec ? p : canon).filename().string();
  } else {
    TFM_CHECK(fs::is_regular_file(p), arg, ": no such run directory or metrics file");
    file = p;
    std::error_code ec;
    const fs::path canon = fs::weakly_canonical(p, ec);
    const fs::path parent = (ec ? p : canon).parent_path();
    r.name = parent.filename().empty() ? p.stem().string() : parent.filename().string();
  }
  r.path = file.string();
  std::ifstream in(file, std::ios::binary);
  TFM_CHECK(in.is_open(), r.path, ": cannot open");
  double offset = 0, last_raw = -1, last_cum = 0;
  int64_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      detail::throw_error(r.path, ":", line_no, ": not a valid JSON line (", e.what(), ")");
    }
    TFM_CHECK(j.is_object() && j.contains("step") && j["step"].is_number(), r.path, ":", line_no,
              ": a metrics row must be a JSON object with a numeric \"step\"");
    auto get = [&](const char* key) -> std::optional<double> {
      if (!j.contains(key) || !j[key].is_number()) return std::nullopt;
      const double v = j[key].get<double>();
      return std::isfinite(v) ? std::optional<double>(v) : std::nullopt;
    };
    MetricRow row;
    row.step = j["step"].get<int64_t>();
    row.train_loss = get("train_loss");
    row.val_loss = get("val_loss");
    row.lr = get("lr");
    row.tokens_per_s = get("tokens_per_s");
    row.val_bleu = get("val_bleu");
    row.val_chrf = get("val_chrf");
    row.val_exact = get("val_exact");
    if (auto e = get("elapsed_s")) {
      if (*e < last_raw) offset = last_cum;  // a resumed run restarts its clock
      last_raw = *e;
      last_cum = offset + *e;
      row.elapsed_s = last_cum;
    }
    r.rows.push_back(row);
  }
  TFM_CHECK(!r.rows.empty(), r.path, ": no metrics rows (empty file)");
  return r;
}

std::string render_curves_svg(const std::vector<RunMetrics>& runs) {
  TFM_CHECK(!runs.empty(), "plot: no runs to plot");
  double max_elapsed = 0;
  for (const auto& r : runs)
    for (const auto& row : r.rows)
      if (row.elapsed_s) max_elapsed = std::max(max_elapsed, *row.elapsed_s);
  const double tdiv = max_elapsed > 7200 ? 3600 : max_elapsed > 300 ? 60 : 1;
  const char* tunit = tdiv == 3600 ? "hours" : tdiv == 60 ? "minutes" : "seconds";

  Panel loss_step{"Loss by step", "step", "cross-entropy loss", {}};
  Panel loss_time{"Loss by elapsed time", std::string("elapsed time (") + tunit + ")", "cross-entropy loss", {}};
  Panel lr{"Learning rate", "step", "learning rate", {}};
  Panel tps{"Throughput", "step", "tokens / s", {}};
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const std::string color = kPalette[i % kPalette.size()];
    Series tr_s{{}, color, false}, va_s{{}, color, true}, tr_t{{}, color, false}, va_t{{}, color, true};
    Series lr_s{{}, color, false}, tp_s{{}, color, false};
    for (const MetricRow& row : runs[i].rows) {
      const auto x = static_cast<double>(row.step);
      if (row.train_loss) tr_s.pts.emplace_back(x, *row.train_loss);
      if (row.val_loss) va_s.pts.emplace_back(x, *row.val_loss);
      if (row.elapsed_s && row.train_loss) tr_t.pts.emplace_back(*row.elapsed_s / tdiv, *row.train_loss);
      if (row.elapsed_s && row.val_loss) va_t.pts.emplace_back(*row.elapsed_s / tdiv, *row.val_loss);
      if (row.lr) lr_s.pts.emplace_back(x, *row.lr);
      if (row.tokens_per_s) tp_s.pts.emplace_back(x, *row.tokens_per_s);
    }
    loss_step.series.push_back(tr_s);
    loss_step.series.push_back(va_s);
    loss_time.series.push_back(tr_t);
    loss_time.series.push_back(va_t);
    lr.series.push_back(lr_s);
    tps.series.push_back(tp_s);
  }
  // Validation scores: a panel for each one that some run logged.
  struct Score {
    const char* title;
    const char* ylabel;
    std::optional<double> MetricRow::*field;
  };
  const Score scores[] = {{"Validation BLEU", "BLEU", &MetricRow::val_bleu},
                          {"Validation chrF", "chrF2", &MetricRow::val_chrf},
                          {"Validation exact match", "exact match (%)", &MetricRow::val_exact}};
  std::vector<Panel> extra;
  for (const Score& sc : scores) {
    Panel p{sc.title, "step", sc.ylabel, {}};
    bool any = false;
    for (std::size_t i = 0; i < runs.size(); ++i) {
      Series s{{}, kPalette[i % kPalette.size()], true};
      for (const MetricRow& row : runs[i].rows)
        if (row.*sc.field) s.pts.emplace_back(static_cast<double>(row.step), *(row.*sc.field));
      any = any || !s.pts.empty();
      p.series.push_back(std::move(s));
    }
    if (any) extra.push_back(std::move(p));
  }

  // Legend: one entry per run (wrapping), then the line-style key.
  const double W = 1200, panel_w = 600, panel_h = 380;
  std::vector<std::pair<double, double>> pos;  // legend entry positions
  double lx = 20, ly = 62;
  for (const auto& r : runs) {
    const double w = 34 + 7.2 * static_cast<double>(utf8_length(r.name)) + 24;
    if (lx + w > W - 20 && lx > 20) lx = 20, ly += 22;
    pos.emplace_back(lx, ly);
    lx += w;
  }
  const double top = ly + 22;
  const double extra_rows = static_cast<double>((extra.size() + 1) / 2);
  const double H = top + (2 + extra_rows) * panel_h + 10;

  std::ostringstream os;
  os << svg_open(W, H);
  os << "<text x=\"20\" y=\"30\" font-size=\"18\" font-weight=\"bold\">Training curves</text>\n";
  os << "<g font-size=\"12\">\n";
  const double kx = W - 300;
  os << "<line x1=\"" << num(kx) << "\" y1=\"26\" x2=\"" << num(kx + 28) << "\" y2=\"26\" stroke=\"#333\" stroke-width=\"1.6\"/>"
     << "<text x=\"" << num(kx + 34) << "\" y=\"30\">train loss</text>\n";
  os << "<line x1=\"" << num(kx + 120) << "\" y1=\"26\" x2=\"" << num(kx + 148)
     << "\" y2=\"26\" stroke=\"#333\" stroke-width=\"1.6\" stroke-dasharray=\"6 4\"/>"
     << "<circle cx=\"" << num(kx + 134) << "\" cy=\"26\" r=\"3\" fill=\"white\" stroke=\"#333\"/>"
     << "<text x=\"" << num(kx + 154) << "\" y=\"30\">validation loss</text>\n";
  for (std::size_t i = 0; i < runs.size(); ++i) {
    const auto [x, y] = pos[i];
    os << "<line x1=\"" << num(x) << "\" y1=\"" << num(y - 4) << "\" x2=\"" << num(x + 28) << "\" y2=\"" << num(y - 4)
       << "\" stroke=\"" << kPalette[i % kPalette.size()] << "\" stroke-width=\"3\"/>"
       << "<text x=\"" << num(x + 34) << "\" y=\"" << num(y) << "\">" << xml_escape(runs[i].name) << "</text>\n";
  }
  os << "</g>\n";
  draw_panel(os, loss_step, 0, top, panel_w, panel_h, 0);
  draw_panel(os, loss_time, panel_w, top, panel_w, panel_h, 1);
  draw_panel(os, lr, 0, top + panel_h, panel_w, panel_h, 2);
  draw_panel(os, tps, panel_w, top + panel_h, panel_w, panel_h, 3);
  for (std::size_t k = 0; k < extra.size(); ++k)
    draw_panel(os, extra[k], static_cast<double>(k % 2) * panel_w, top + static_cast<double>(2 + k / 2) * panel_h,
               panel_w, panel_h, static_cast<int>(4 + k));
  os << "</svg>\n";
  return os.str();
}

void run_plot(const PlotArgs& args, std::ostream& out) {
  TFM_CHECK(!args.runs.empty(), "tfm plot: give at least one run directory (or metrics.jsonl file)");
  TFM_CHECK(!args.out.empty(), "--out: an output file name is required");
  std::vector<RunMetrics> runs;
  for (const std::string& r : args.runs) runs.push_back(read_run_metrics(r));
  // Runs with the same directory name (a/run, b/run) get their parent's name too.
  for (std::size_t i = 0; i < runs.size(); ++i)
    for (std::size_t k = 0; k < runs.size(); ++k)
      if (i != k && runs[i].name == runs[k].name) {
        for (RunMetrics* r : {&runs[i], &runs[k]}) {
          std::error_code ec;
          const fs::path dir = fs::weakly_canonical(fs::path(r->path), ec).parent_path();
          const std::string parent = dir.parent_path().filename().string();
          if (!parent.empty() && r->name.find('/') == std::string::npos) r->name = parent + "/" + r->name;
        }
      }
  write_text_file(args.out, render_curves_svg(runs));
  std::size_t rows = 0;
  for (const auto& r : runs) rows += r.rows.size();
  out << "wrote " << args.out << " (" << runs.size() << (runs.size() == 1 ? " run, " : " runs, ") << rows
      << " metric rows)\n";
}

// ---------------------------------------------------------------- heatmaps

std::string render_heatmap_svg(const Heatmap& h) {
  const std::size_t rows = h.row_labels.size(), cols = h.col_labels.size();
  TFM_CHECK(rows > 0 && cols > 0 && h.values.size() == rows * cols, "heatmap: ", h.values.size(),
            " values do not fill ", rows, " rows × ", cols, " columns");
  const double cell = std::clamp(std::round(640.0 / static_cast<double>(std::max(rows, cols))), 3.0, 28.0);
  const double font = std::clamp(cell * 0.8, 6.0, 12.0);
  const std::size_t every = cell >= 7 ? 1 : static_cast<std::size_t>(std::ceil(7.0 / cell));
  std::size_t longest_row = 1, longest_col = 1;
  for (const auto& s : h.row_labels) longest_row = std::max(longest_row, utf8_length(s));
  for (const auto& s : h.col_labels) longest_col = std::max(longest_col, utf8_length(s));
  const double row_label_w = static_cast<double>(longest_row) * font * 0.65 + 8;
  const double col_label_h = static_cast<double>(longest_col) * font * 0.65 + 8;
  const double ox = 36 + row_label_w, oy = 64 + col_label_h;
  const double gw = cell * static_cast<double>(cols), gh = cell * static_cast<double>(rows);
  const double bar_h = std::max(gh, 120.0);
  const double W = std::max(ox + gw + 90, 360.0), H = oy + std::max(gh, bar_h) + 20;
  float vmax = 0;
  for (float v : h.values)
    if (std::isfinite(v)) vmax = std::max(vmax, v);
  const double scale = vmax > 0 ? 1.0 / vmax : 1.0;

  std::ostringstream os;
  os << svg_open(W, H);
  os << "<text x=\"12\" y=\"24\" font-size=\"15\" font-weight=\"bold\">" << xml_escape(h.title) << "</text>\n";
  os << "<text x=\"" << num(ox + gw / 2) << "\" y=\"46\" text-anchor=\"middle\" font-size=\"12\">"
     << xml_escape(h.col_axis) << " →</text>\n";
  os << "<text transform=\"translate(16," << num(oy + gh / 2) << ") rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">"
     << xml_escape(h.row_axis) << " →</text>\n";
  const bool tooltips = rows * cols <= 4096;
  os << "<g shape-rendering=\"crispEdges\">\n";
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) {
      const float v = h.values[i * cols + j];
      os << "<rect x=\"" << num(ox + cell * static_cast<double>(j)) << "\" y=\"" << num(oy + cell * static_cast<double>(i))
         << "\" width=\"" << num(cell) << "\" height=\"" << num(cell) << "\" fill=\"" << viridis(v * scale) << "\"";
      if (tooltips) {
        os << "><title>" << xml_escape(h.row_labels[i]) << " → " << xml_escape(h.col_labels[j]) << ": " << num(v, 4)
           << "</title></rect>\n";
      } else {
        os << "/>\n";
      }
    }
  os << "</g>\n<g font-family=\"DejaVu Sans Mono, monospace\" font-size=\"" << num(font) << "\">\n";
  for (std::size_t i = 0; i < rows; i += every)
    os << "<text x=\"" << num(ox - 4) << "\" y=\"" << num(oy + cell * (static_cast<double>(i) + 0.5) + font * 0.35)
       << "\" text-anchor=\"end\">" << xml_escape(h.row_labels[i]) << "</text>\n";
  for (std::size_t j = 0; j < cols; j += every)
    os << "<text transform=\"translate(" << num(ox + cell * (static_cast<double>(j) + 0.5) + font * 0.35) << ","
       << num(oy - 4) << ") rotate(-90)\">" << xml_escape(h.col_labels[j]) << "</text>\n";
  os << "</g>\n";
  // Colour bar from 0 (bottom) to vmax (top).
  const double bx = ox + gw + 20;
  os << "<defs><linearGradient id=\"cbar\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (std::size_t k = 0; k < kViridis.size(); ++k) {
    const double t = static_cast<double>(k) / static_cast<double>(kViridis.size() - 1);
    os << "<stop offset=\"" << num(t, 3) << "\" stop-color=\"" << viridis(t) << "\"/>";
  }
  os << "</linearGradient></defs>\n";
  os << "<rect x=\"" << num(bx) << "\" y=\"" << num(oy) << "\" width=\"14\" height=\"" << num(bar_h)
     << "\" fill=\"url(#cbar)\" stroke=\"#444\"/>\n";
  os << "<text x=\"" << num(bx + 18) << "\" y=\"" << num(oy + 10) << "\" font-size=\"11\">" << num(vmax, 3) << "</text>\n";
  os << "<text x=\"" << num(bx + 18) << "\" y=\"" << num(oy + bar_h) << "\" font-size=\"11\">0</text>\n";
  os << "</svg>\n";
  return os.str();
}

}  // namespace tfm::train
