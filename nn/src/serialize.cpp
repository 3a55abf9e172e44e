#include "clarena/nn/serialize.h"

#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <string_view>

#include "clarena/core/atomic_file.h"

namespace clarena::nn {
namespace {

constexpr char kMagic[8] = {'C', 'L', 'R', 'N', 'P', 'A', 'R', 'M'};
constexpr uint32_t kVersion = 1;

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

/// Reads from an in-memory file, naming the file and offset on a short read. `end` excludes
/// the trailing checksum: no field may run into it.
class Reader {
 public:
  Reader(const std::string& bytes, size_t end, const std::filesystem::path& file)
      : bytes_(bytes), end_(end), file_(file) {}
  template <typename T>
  T get(const char* what) {
    T value;
    std::memcpy(&value, take(sizeof(T), what), sizeof(T));
    return value;
  }
  const char* take(size_t n, const char* what) {
    if (n > remaining()) fail(std::string("truncated while reading ") + what);
    const char* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  [[noreturn]] void fail(const std::string& why) const {
    throw IOError("parameter file " + file_.string() + ": " + why + " at byte offset " +
                  std::to_string(pos_));
  }
  size_t pos() const { return pos_; }
  size_t remaining() const { return end_ - pos_; }

 private:
  const std::string& bytes_;
  size_t end_;
  const std::filesystem::path& file_;
  size_t pos_ = 0;
};

}  // namespace

void save_tensors(const NamedTensors& tensors, const std::filesystem::path& file) {
  std::string out(kMagic, sizeof(kMagic));
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, tensor] : tensors) {
    put<uint32_t>(out, static_cast<uint32_t>(name.size()));
    out += name;
    put<uint8_t>(out, static_cast<uint8_t>(tensor.dtype()));
    put<uint32_t>(out, static_cast<uint32_t>(tensor.dim()));
    for (int64_t d : tensor.shape())
      put<int64_t>(out, d);
    Tensor host = tensor.to(Device::cpu());
    out.append(static_cast<const char*>(host.raw()), host.nbytes());
  }
  put<uint64_t>(out, fnv1a64(out));
  // A reader, a kill or a full disk leaves the old file or the whole new one.
  write_file_atomic(file, out);
}

NamedTensors load_tensors(const std::filesystem::path& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f)
    throw IOError("cannot open parameter file " + file.string() + ": no such file or unreadable");
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  constexpr size_t kChecksum = 8;
  Reader in(bytes, bytes.size() < kChecksum ? 0 : bytes.size() - kChecksum, file);
  if (bytes.size() < sizeof(kMagic) || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0)
    in.fail("not a clarena parameter file (bad magic number)");
  if (bytes.size() < sizeof(kMagic) + 8 + kChecksum) in.fail("truncated header");
  in.take(sizeof(kMagic), "magic");
  uint64_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - kChecksum, kChecksum);
  if (stored != fnv1a64(std::string_view(bytes).substr(0, bytes.size() - kChecksum)))
    throw IOError("parameter file " + file.string() +
                  ": checksum mismatch (the file is corrupted or truncated)");
  // The checksum only catches accidents (anyone can recompute it): every declared count and
  // size below is checked against the bytes really left before anything is allocated, with
  // overflow-checked arithmetic.
  const uint32_t version = in.get<uint32_t>("version");
  if (version != kVersion) in.fail("unsupported version " + std::to_string(version));
  const uint32_t count = in.get<uint32_t>("tensor count");
  // Each tensor takes at least a name length, a dtype and a rank.
  constexpr size_t kMinTensorBytes = sizeof(uint32_t) + sizeof(uint8_t) + sizeof(uint32_t);
  if (count > in.remaining() / kMinTensorBytes)
    in.fail("declares " + std::to_string(count) + " tensors, but " +
            std::to_string(in.remaining()) + " bytes cannot hold more than " +
            std::to_string(in.remaining() / kMinTensorBytes));
  NamedTensors tensors;
  tensors.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t length = in.get<uint32_t>("name length");
    if (length > in.remaining())
      in.fail("name length " + std::to_string(length) + " of tensor " + std::to_string(i) +
              " exceeds the " + std::to_string(in.remaining()) + " bytes left");
    std::string name(in.take(length, "name"), length);
    const uint8_t dtype = in.get<uint8_t>("dtype");
    if (dtype > static_cast<uint8_t>(DType::Int64))
      in.fail("unknown dtype " + std::to_string(dtype) + " of '" + name + "'");
    const uint32_t rank = in.get<uint32_t>("rank");
    if (rank > 8) in.fail("implausible rank " + std::to_string(rank) + " of '" + name + "'");
    if (rank * sizeof(int64_t) > in.remaining())
      in.fail("rank " + std::to_string(rank) + " of '" + name + "' needs " +
              std::to_string(rank * sizeof(int64_t)) + " bytes of dimensions, " +
              std::to_string(in.remaining()) + " left");
    Shape shape(rank);
    for (auto& d : shape) {
      d = in.get<int64_t>("shape");
      if (d < 0)
        in.fail("negative dimension " + std::to_string(d) + " in the shape of '" + name + "'");
    }
    const std::string declared = std::string(dtype_name(DType(dtype))) + shape_str(shape);
    size_t nbytes = 0;
    try {
      nbytes = shape_nbytes(shape, DType(dtype), "parameter file");
    } catch (const ShapeError&) {
      in.fail("'" + name + "' declares " + declared + ", whose size overflows");
    }
    if (nbytes > in.remaining())
      in.fail("'" + name + "' declares " + declared + " (" + std::to_string(nbytes) +
              " bytes of tensor data), but only " + std::to_string(in.remaining()) +
              " bytes are left before the checksum");
    const char* data = in.take(nbytes, "tensor data");
    tensors.emplace_back(std::move(name), Tensor::from_data(data, shape, DType(dtype)));
  }
  if (in.remaining() != 0) in.fail("unexpected bytes after the last tensor");
  return tensors;
}

void save(const Module& module, const std::filesystem::path& file) {
  NamedTensors all = module.named_parameters();
  for (auto& entry : module.named_buffers())
    all.push_back(entry);
  save_tensors(all, file);
}

void load(Module& module, const std::filesystem::path& file) {
  NamedTensors loaded = load_tensors(file);
  std::map<std::string, Tensor> by_name(loaded.begin(), loaded.end());
  NamedTensors targets = module.named_parameters();
  for (auto& entry : module.named_buffers())
    targets.push_back(entry);
  // Check everything first, so that an error leaves the module untouched.
  if (by_name.size() != targets.size() || loaded.size() != targets.size())
    throw IOError("parameter file " + file.string() + " holds " + std::to_string(loaded.size()) +
                  " tensors, the module has " + std::to_string(targets.size()));
  for (const auto& [name, target] : targets) {
    auto it = by_name.find(name);
    if (it == by_name.end())
      throw IOError("parameter file " + file.string() + " has no tensor named '" + name + "'");
    if (it->second.shape() != target.shape() || it->second.dtype() != target.dtype())
      throw IOError("parameter file " + file.string() + ": '" + name + "' is " + it->second.str() +
                    ", the module expects " + target.str());
  }
  for (auto& [name, target] : targets)
    target.copy_(by_name.at(name));
}

}  // namespace clarena::nn
