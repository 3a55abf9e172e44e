#include "clarena/cl/plots.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "clarena/core/atomic_file.h"
#include "clarena/core/errors.h"
#include "text_format.h"

namespace clarena::cl {
namespace {

using detail::format_fixed;

std::string num(double v) {
  return format_fixed(v, 2);
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string text(double x, double y, const std::string& s, int size, const char* anchor,
                 const std::string& extra = "") {
  return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\" font-size=\"" + std::to_string(size) +
         "\" text-anchor=\"" + anchor + "\"" + extra + ">" + escape(s) + "</text>\n";
}

std::string svg_open(double w, double h) {
  return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" "
         "width=\"" +
         num(w) + "\" height=\"" + num(h) + "\" viewBox=\"0 0 " + num(w) + " " + num(h) +
         "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n<rect width=\"100%\" "
         "height=\"100%\" fill=\"white\"/>\n";
}

void save(const std::filesystem::path& path, const std::string& svg, const char* who) {
  try {
    write_file_atomic(path, svg);  // IOError naming the file on any failure
  } catch (const IOError& e) {
    throw IOError(std::string(who) + ": " + e.what());
  }
}

// ColorBrewer "Greens" (matplotlib's cmap used by CLArena's matrix plot), 9 stops.
constexpr unsigned kGreens[9] = {0xf7fcf5, 0xe5f5e0, 0xc7e9c0, 0xa1d99b, 0x74c476,
                                 0x41ab5d, 0x238b45, 0x006d2c, 0x00441b};

std::string hex(unsigned rgb) {
  const char* d = "0123456789abcdef";
  std::string s = "#";
  for (int shift = 20; shift >= 0; shift -= 4)
    s += d[(rgb >> shift) & 0xf];
  return s;
}

std::string greens(double v) {
  const double x = std::clamp(v, 0.0, 1.0) * 8.0;
  const int k = std::min(7, static_cast<int>(x));
  const double f = x - k;
  unsigned rgb = 0;
  for (int shift = 16; shift >= 0; shift -= 8) {
    const double a = (kGreens[k] >> shift) & 0xff, b = (kGreens[k + 1] >> shift) & 0xff;
    rgb |= static_cast<unsigned>(std::lround(a + (b - a) * f)) << shift;
  }
  return hex(rgb);
}

constexpr int kHeatmapMaxCells = 50;

constexpr const char* kPalette[10] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

}  // namespace

void write_heatmap_svg(const std::filesystem::path& path, const AccuracyMatrix& m,
                       const std::string& title) {
  const int n = m.num_tasks();
  // Past kHeatmapMaxCells tasks a cell is the mean of a block x block square of tasks, so
  // the file stays under ~1 MB at any task count.
  const int block = (n + kHeatmapMaxCells - 1) / kHeatmapMaxCells;
  const int cells = (n + block - 1) / block;
  auto first = [&](int k) { return (k - 1) * block + 1; };  // first task of cell k
  auto last = [&](int k) { return std::min(n, k * block); };
  const double cell = 64, left = 96, top = 56, grid = cells * cell;
  const double bar_x = left + grid + 24, height = top + grid + 64;
  // Wide enough for the title (about 11 px per bold 18 px character).
  const double width = std::max(bar_x + 72, 11.0 * static_cast<double>(title.size()) + 40);
  std::string s = svg_open(width, height);
  s += text(width / 2, 30, title, 18, "middle", " font-weight=\"bold\"");
  if (block > 1) {
    s += text(width / 2, 48,
              "each cell: mean over a block of " + std::to_string(block) + " x " +
                  std::to_string(block) + " tasks (" + std::to_string(n) + " tasks)",
              12, "middle");
  }
  for (int bi = 1; bi <= cells; ++bi) {
    for (int bj = 1; bj <= bi; ++bj) {
      double sum = 0;
      int count = 0;
      for (int i = first(bi); i <= last(bi); ++i) {
        for (int j = first(bj); j <= std::min(i, last(bj)); ++j) {
          if (const auto v = m.get(i, j)) sum += *v, ++count;
        }
      }
      const double x = left + (bj - 1) * cell, y = top + (bi - 1) * cell;
      const double mean = count ? sum / count : 0.0;
      s += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(cell) + "\" height=\"" +
           num(cell) + "\" fill=\"" + (count ? greens(mean) : "#eeeeee") +
           "\" stroke=\"#ffffff\"/>\n";
      if (count) {
        const char* ink = mean > 0.6 ? "#ffffff" : "#000000";
        s += text(x + cell / 2, y + cell / 2 + 5, format_fixed(mean, 3), 14, "middle",
                  std::string(" fill=\"") + ink + "\"");
      }
    }
  }
  s += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(grid) +
       "\" height=\"" + num(grid) + "\" fill=\"none\" stroke=\"#444444\"/>\n";
  for (int k = 1; k <= cells; ++k) {
    const double c = (k - 0.5) * cell;
    const std::string label = first(k) == last(k)
                                  ? std::to_string(first(k))
                                  : std::to_string(first(k)) + "-" + std::to_string(last(k));
    s += text(left + c, top + grid + 18, label, block > 1 ? 11 : 13, "middle");
    s += text(left - 8, top + c + 5, label, block > 1 ? 11 : 13, "end");
  }
  s += text(left + grid / 2, top + grid + 44, "test on task j", 14, "middle");
  const double ylab_x = 34, ylab_y = top + grid / 2;
  s += text(ylab_x, ylab_y, "after training task i", 14, "middle",
            " transform=\"rotate(-90 " + num(ylab_x) + " " + num(ylab_y) + ")\"");
  // Colour bar from 1 (top) to 0 (bottom).
  s += "<defs><linearGradient id=\"cbar\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n";
  for (int k = 0; k < 9; ++k) {
    s += "<stop offset=\"" + format_fixed(k / 8.0, 3) + "\" stop-color=\"" + hex(kGreens[k]) +
         "\"/>\n";
  }
  s += "</linearGradient></defs>\n<rect x=\"" + num(bar_x) + "\" y=\"" + num(top) +
       "\" width=\"16\" height=\"" + num(grid) + "\" fill=\"url(#cbar)\" stroke=\"#444444\"/>\n";
  for (int k = 0; k <= 4; ++k) {
    const double v = k / 4.0;
    s += text(bar_x + 22, top + grid * (1 - v) + 4, format_fixed(v, 2), 11, "start");
  }
  save(path, s + "</svg>\n", "write_heatmap_svg");
}

void write_curve_svg(const std::filesystem::path& path, const std::vector<Series>& series,
                     const std::string& title, const std::string& xlabel,
                     const std::string& ylabel) {
  size_t npts = 1;
  double lo = 0.0, hi = 1.0, vmin = INFINITY, vmax = -INFINITY;
  for (const auto& [name, ys] : series) {
    npts = std::max(npts, ys.size());
    for (double y : ys) {
      if (!std::isfinite(y)) continue;
      vmin = std::min(vmin, y);
      vmax = std::max(vmax, y);
    }
  }
  if (vmin < 0.0 || vmax > 1.0) {  // not accuracies: fit the data with a margin
    const double pad = vmax > vmin ? 0.05 * (vmax - vmin) : 0.5;
    lo = vmin - pad, hi = vmax + pad;
  }
  const double left = 72, top = 52, pw = 520, ph = 300, legend_x = left + pw + 20;
  size_t longest = 0;
  for (const auto& sr : series)
    longest = std::max(longest, sr.first.size());
  const double width = legend_x + std::max(170.0, 8.0 * static_cast<double>(longest) + 50),
               height = top + ph + 62;
  auto px = [&](double x) {
    return npts == 1 ? left + pw / 2 : left + (x - 1) * pw / static_cast<double>(npts - 1);
  };
  auto py = [&](double y) { return top + ph * (hi - y) / (hi - lo); };

  std::string s = svg_open(width, height);
  s += text(left + pw / 2, 30, title, 18, "middle", " font-weight=\"bold\"");
  for (int k = 0; k <= 5; ++k) {  // horizontal grid and y ticks
    const double v = lo + (hi - lo) * k / 5.0, y = py(v);
    s += "<line x1=\"" + num(left) + "\" y1=\"" + num(y) + "\" x2=\"" + num(left + pw) +
         "\" y2=\"" + num(y) + "\" stroke=\"#dddddd\"/>\n";
    s += text(left - 8, y + 4, format_fixed(v, 2), 12, "end");
  }
  const size_t step = std::max<size_t>(1, (npts + 11) / 12);
  for (size_t x = 1; x <= npts; x += step) {
    s += text(px(static_cast<double>(x)), top + ph + 20, std::to_string(x), 12, "middle");
  }
  s += "<rect x=\"" + num(left) + "\" y=\"" + num(top) + "\" width=\"" + num(pw) + "\" height=\"" +
       num(ph) + "\" fill=\"none\" stroke=\"#444444\"/>\n";
  s += text(left + pw / 2, top + ph + 46, xlabel, 14, "middle");
  const double ylab_x = 22, ylab_y = top + ph / 2;
  s += text(ylab_x, ylab_y, ylabel, 14, "middle",
            " transform=\"rotate(-90 " + num(ylab_x) + " " + num(ylab_y) + ")\"");

  for (size_t k = 0; k < series.size(); ++k) {
    const auto& [name, ys] = series[k];
    const std::string colour = kPalette[k % 10];
    std::string points;  // a polyline per run of finite values
    auto flush = [&] {
      if (!points.empty()) {
        s += "<polyline fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"2\" points=\"" +
             points + "\"/>\n";
      }
      points.clear();
    };
    for (size_t i = 0; i < ys.size(); ++i) {
      if (!std::isfinite(ys[i])) {
        flush();
        continue;
      }
      const double x = px(static_cast<double>(i + 1)), y = py(ys[i]);
      if (!points.empty()) points += ' ';
      points.append(num(x)).append(",").append(num(y));
      s += "<circle cx=\"" + num(x) + "\" cy=\"" + num(y) + "\" r=\"3.5\" fill=\"" + colour +
           "\"/>\n";
    }
    flush();
    const double ly = top + 12 + 22.0 * static_cast<double>(k);
    s += "<line x1=\"" + num(legend_x) + "\" y1=\"" + num(ly) + "\" x2=\"" + num(legend_x + 24) +
         "\" y2=\"" + num(ly) + "\" stroke=\"" + colour + "\" stroke-width=\"2\"/>\n";
    s += text(legend_x + 30, ly + 4, name, 13, "start");
  }
  save(path, s + "</svg>\n", "write_curve_svg");
}

}  // namespace clarena::cl
