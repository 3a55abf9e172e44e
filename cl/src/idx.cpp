#include "clarena/cl/idx.h"

#include <zlib.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>

#include "clarena/core/errors.h"

namespace clarena::cl {
namespace {

namespace fs = std::filesystem;

constexpr uint8_t kTypeUnsignedByte = 0x08;
constexpr const char* kDataHint =
    "install Debian's package `dataset-fashion-mnist` (files under "
    "/usr/share/datasets/fashion-mnist) or set `data_dir=` to a folder of MNIST-format IDX "
    "files";

[[noreturn]] void fail(const fs::path& path, const std::string& what) {
  throw IOError("IDX file '" + path.string() + "': " + what);
}

std::string type_name(uint8_t type) {
  switch (type) {
    case 0x08:
      return "unsigned byte (0x08)";
    case 0x09:
      return "signed byte (0x09)";
    case 0x0B:
      return "int16 (0x0B)";
    case 0x0C:
      return "int32 (0x0C)";
    case 0x0D:
      return "float32 (0x0D)";
    case 0x0E:
      return "float64 (0x0E)";
    default:
      return "unknown type code " + std::to_string(type);
  }
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i)
    s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (!ec && size > kMaxIdxBytes) {
    fail(path, "holds " + std::to_string(size) + " bytes; an IDX file is at most " +
                   std::to_string(kMaxIdxBytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "cannot open (missing or unreadable)");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                             std::istreambuf_iterator<char>());
  if (in.bad()) fail(path, "read error");
  return bytes;
}

// Inflates every gzip member of `in` (gzip allows several concatenated members).
std::vector<uint8_t> gunzip(const std::vector<uint8_t>& in, const fs::path& path) {
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) fail(path, "zlib inflateInit2 failed");
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  std::vector<uint8_t> out(in.size() * 4 + 1024);
  size_t produced = 0;
  auto consumed = [&] { return std::to_string(in.size() - zs.avail_in); };
  for (;;) {
    if (produced >= kMaxIdxBytes) {
      inflateEnd(&zs);
      fail(path, "decompresses to more than " + std::to_string(kMaxIdxBytes) +
                     " bytes (at compressed byte offset " + consumed() +
                     "); an IDX file is at most that large");
    }
    if (produced == out.size()) out.resize(std::min<size_t>(out.size() * 2, kMaxIdxBytes + 1));
    zs.next_out = out.data() + produced;
    zs.avail_out = static_cast<uInt>(std::min<size_t>(out.size() - produced, 1u << 30));
    const uInt avail_before = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    produced += avail_before - zs.avail_out;
    if (rc == Z_STREAM_END) {
      if (zs.avail_in == 0) break;
      if (zs.next_in[0] != 0x1f) {
        inflateEnd(&zs);
        fail(path,
             "trailing garbage after the gzip stream at compressed byte offset " + consumed());
      }
      inflateReset(&zs);
    } else if (rc == Z_BUF_ERROR && zs.avail_in == 0) {
      inflateEnd(&zs);
      fail(path, "gzip stream truncated at compressed byte offset " + consumed());
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      const std::string msg = zs.msg ? zs.msg : "error " + std::to_string(rc);
      inflateEnd(&zs);
      fail(path, "corrupt gzip stream (" + msg + ") near compressed byte offset " + consumed());
    }
  }
  inflateEnd(&zs);
  out.resize(produced);
  return out;
}

uint32_t read_be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<uint8_t>(v >> shift));
}

// Returns `<dir>/<base>` or `<dir>/<base>.gz`, whichever exists (plain preferred).
fs::path find_file(const fs::path& dir, const std::string& base) {
  for (const fs::path& p : {dir / base, dir / (base + ".gz")}) {
    if (fs::is_regular_file(p)) return p;
  }
  throw IOError("missing IDX file '" + (dir / base).string() + "' (or '" + base +
                ".gz') in data folder '" + dir.string() + "': " + kDataHint);
}

}  // namespace

IdxArray read_idx(const fs::path& path) {
  std::vector<uint8_t> bytes = read_bytes(path);
  const bool gz = bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
  if (gz) bytes = gunzip(bytes, path);
  // With gzip, offsets below count bytes of the decompressed stream.
  const std::string where = gz ? " of the decompressed data" : "";

  if (bytes.size() < 4) {
    fail(path, "too short for the 4-byte IDX magic: file has " + std::to_string(bytes.size()) +
                   " bytes" + where);
  }
  if (bytes[0] != 0 || bytes[1] != 0) {
    fail(path, "bad magic at byte offset 0: expected 00 00 <type> <ndims>, got first bytes " +
                   std::to_string(bytes[0]) + " " + std::to_string(bytes[1]));
  }
  const uint8_t type = bytes[2];
  if (type != kTypeUnsignedByte) {
    fail(path, "element type at byte offset 2 is " + type_name(type) +
                   "; only unsigned byte (0x08) is supported");
  }
  const size_t ndims = bytes[3];
  if (ndims == 0) fail(path, "number of dimensions at byte offset 3 is 0");
  const size_t header = 4 + 4 * ndims;
  if (bytes.size() < header) {
    fail(path, "truncated header: " + std::to_string(ndims) + " dimensions need " +
                   std::to_string(header) + " bytes but the file ends at byte offset " +
                   std::to_string(bytes.size()) + where);
  }

  IdxArray out;
  uint64_t expected = 1;
  for (size_t d = 0; d < ndims; ++d) {
    const uint32_t dim = read_be32(&bytes[4 + 4 * d]);
    out.dims.push_back(dim);
    if (dim != 0 && expected > std::numeric_limits<uint64_t>::max() / dim) {
      fail(path, "dimensions overflow at byte offset " + std::to_string(4 + 4 * d));
    }
    expected *= dim;
  }
  const uint64_t payload = bytes.size() - header;
  if (payload < expected) {
    fail(path, "truncated payload: dims " + dims_str(out.dims) + " need " +
                   std::to_string(expected) + " bytes after the " + std::to_string(header) +
                   "-byte header, but the data ends at byte offset " +
                   std::to_string(bytes.size()) + where + " (" + std::to_string(payload) +
                   " payload bytes)");
  }
  if (payload > expected) {
    fail(path, std::to_string(payload - expected) + " extra bytes after the payload of dims " +
                   dims_str(out.dims) + ", starting at byte offset " +
                   std::to_string(header + expected) + where);
  }
  out.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return out;
}

void write_idx(const fs::path& path, const std::vector<int64_t>& dims,
               const std::vector<uint8_t>& data, bool gzip) {
  if (dims.empty() || dims.size() > 255) {
    throw ValueError("write_idx '" + path.string() + "': needs 1..255 dims, got " +
                     std::to_string(dims.size()));
  }
  uint64_t expected = 1;
  for (int64_t d : dims) {
    if (d < 0 || d > std::numeric_limits<uint32_t>::max()) {
      throw ValueError("write_idx '" + path.string() + "': dim out of range in " + dims_str(dims));
    }
    expected *= static_cast<uint64_t>(d);
  }
  if (expected != data.size()) {
    throw ValueError("write_idx '" + path.string() + "': dims " + dims_str(dims) + " need " +
                     std::to_string(expected) + " bytes, data has " + std::to_string(data.size()));
  }
  std::vector<uint8_t> bytes = {0, 0, kTypeUnsignedByte, static_cast<uint8_t>(dims.size())};
  for (int64_t d : dims)
    put_be32(bytes, static_cast<uint32_t>(d));
  bytes.insert(bytes.end(), data.begin(), data.end());

  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (!f) throw IOError("write_idx: cannot open '" + path.string() + "' for writing");
    const bool ok =
        bytes.empty() || gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) ==
                             static_cast<int>(bytes.size());
    if (gzclose(f) != Z_OK || !ok) {
      throw IOError("write_idx: failed writing gzip file '" + path.string() + "'");
    }
    return;
  }
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  if (!out) throw IOError("write_idx: failed writing '" + path.string() + "'");
}

IdxDataset load_idx_split(const fs::path& dir, bool train, int64_t num_classes) {
  if (!fs::is_directory(dir)) {
    const bool exists = fs::exists(dir);
    throw IOError("data folder '" + dir.string() + "' " +
                  (exists ? "is not a folder" : "does not exist") + ": " + kDataHint);
  }
  const std::string prefix = train ? "train" : "t10k";
  const fs::path images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const fs::path labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  IdxArray images = read_idx(images_path);
  IdxArray labels = read_idx(labels_path);

  if (images.dims.size() != 3) {
    fail(images_path, "images must have 3 dims (count, rows, cols), got " + dims_str(images.dims));
  }
  if (labels.dims.size() != 1) {
    fail(labels_path, "labels must have 1 dim (count), got " + dims_str(labels.dims));
  }
  if (images.dims[0] == 0) {
    fail(images_path, "holds no images (dims " + dims_str(images.dims) +
                          "); a data folder needs at least one image per task");
  }
  if (images.dims[1] == 0 || images.dims[2] == 0) {
    fail(images_path, "images of " + std::to_string(images.dims[1]) + "x" +
                          std::to_string(images.dims[2]) + " pixels hold nothing (dims " +
                          dims_str(images.dims) + ")");
  }
  if (images.dims[0] != labels.dims[0]) {
    throw IOError("IDX files disagree: '" + images_path.string() + "' holds " +
                  std::to_string(images.dims[0]) + " images but '" + labels_path.string() +
                  "' holds " + std::to_string(labels.dims[0]) + " labels");
  }
  IdxDataset out;
  out.num = images.dims[0];
  out.rows = images.dims[1];
  out.cols = images.dims[2];
  out.images = std::move(images.data);
  out.images_file = images_path;
  out.labels_file = labels_path;
  out.labels.reserve(labels.data.size());
  for (size_t i = 0; i < labels.data.size(); ++i) {
    const int64_t label = labels.data[i];
    if (label >= num_classes) {
      fail(labels_path, "label " + std::to_string(label) + " of item " + std::to_string(i) +
                            " (byte offset " + std::to_string(8 + i) + ") is not < " +
                            std::to_string(num_classes));
    }
    out.labels.push_back(label);
  }
  return out;
}

}  // namespace clarena::cl
