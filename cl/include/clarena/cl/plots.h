// Self-contained SVG writers for CL results (no plotting dependency).
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "clarena/cl/metrics.h"

namespace clarena::cl {

/// Heatmap of the accuracy matrix: cells coloured by accuracy (matplotlib's "Greens", as
/// CLArena's plot), values printed in cells, rows "after training task i", columns "test on
/// task j". Past 50 tasks each cell is the mean over a square block of ceil(n/50) tasks, so
/// the file stays under ~1 MB at any task count. Throws clarena::IOError when the file
/// cannot be written.
void write_heatmap_svg(const std::filesystem::path& path, const AccuracyMatrix& m,
                       const std::string& title);

/// One named line series: y values at x = 1, 2, ... (NaN leaves a gap).
using Series = std::pair<std::string, std::vector<double>>;

/// Line chart of several named series with a legend, e.g. average accuracy after each task
/// for Finetuning vs Fix. The y axis spans [0, 1] when every value lies there.
void write_curve_svg(const std::filesystem::path& path, const std::vector<Series>& series,
                     const std::string& title, const std::string& xlabel,
                     const std::string& ylabel);

}  // namespace clarena::cl
