// IDX (MNIST format) files: reader for plain or gzip-compressed files, a loader for a
// train/test split in a folder, and a small writer used by tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace clarena::cl {

/// An unsigned-byte IDX array: row-major payload and its dimensions.
inline constexpr uint64_t kMaxIdxBytes = uint64_t{1} << 31;

struct IdxArray {
  std::vector<uint8_t> data;
  std::vector<int64_t> dims;
};

/// Reads an IDX file of element type 0x08 (unsigned byte), plain or gzip (detected by the
/// 1f 8b magic; at most kMaxIdxBytes once decompressed). Throws clarena::IOError naming the
/// file, what is wrong and the byte offset.
IdxArray read_idx(const std::filesystem::path& path);

/// Writes an unsigned-byte IDX file (gzip-compressed when `gzip`). Throws clarena::IOError
/// when the file cannot be written, clarena::ValueError when data.size() != product(dims).
void write_idx(const std::filesystem::path& path, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& data, bool gzip);

/// Images (num x rows x cols bytes, row-major) and their labels.
struct IdxDataset {
  std::vector<uint8_t> images;
  std::vector<int64_t> labels;
  int64_t num = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  std::filesystem::path images_file, labels_file;  // where they were read from
};

/// Where Debian's `dataset-fashion-mnist` package puts its files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Loads `train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]` (or the `t10k-`
/// pair when !train) from `dir`. Checks ranks (3 and 1), that there is at least one image of
/// at least one pixel, that counts agree and that every label is < num_classes; throws
/// clarena::IOError naming the file otherwise. A missing folder or file throws
/// clarena::IOError saying how to get the data.
IdxDataset load_idx_split(const std::filesystem::path& dir, bool train, int64_t num_classes = 10);

}  // namespace clarena::cl
