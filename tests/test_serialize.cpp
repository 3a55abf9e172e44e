// Parameter files: round trip, and every corrupt-file case leaves the module untouched.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "clarena/clarena.h"

using namespace clarena;
namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

std::string read_bytes(const fs::path& file) {
  std::ifstream f(file, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_bytes(const fs::path& file, const std::string& bytes) {
  std::ofstream f(file, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// The file format's trailing checksum (FNV-1a, 64 bit), to forge files that pass it.
std::string with_checksum(std::string body) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : body)
    h = (h ^ c) * 0x100000001b3ull;
  body.append(reinterpret_cast<const char*>(&h), sizeof(h));
  return body;
}

/// Every parameter and buffer of a module, by name, as raw bytes.
std::vector<std::pair<std::string, std::string>> state_of(const nn::Module& m) {
  std::vector<std::pair<std::string, std::string>> out;
  nn::NamedTensors all = m.named_parameters();
  for (auto& b : m.named_buffers())
    all.push_back(b);
  for (const auto& [name, t] : all) {
    const auto v = t.to_vector<float>();
    out.emplace_back(name, std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4));
  }
  return out;
}

std::string message_of_load(nn::Module& m, const fs::path& file) {
  try {
    nn::load(m, file);
  } catch (const IOError& e) {
    return e.what();
  }
  ADD_FAILURE() << "load of " << file << " did not throw IOError";
  return "";
}

class Serialize : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir = fs::temp_directory_path() /
          ("clarena_test_serialize_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    // Non-trivial running statistics: one training-mode forward.
    Tensor x = Tensor::normal({8, 6}, 1, 2, gen);
    source.train();
    autograd::NoGradGuard no_grad;
    source(x);
  }
  void TearDown() override { fs::remove_all(dir); }

  /// A saved file of `source`, and its bytes.
  fs::path saved() {
    const fs::path file = dir / "model.bin";
    nn::save(source, file);
    return file;
  }

  fs::path dir;
  Generator gen{1};
  nn::MLP source{6, {5, 4}, gen, {nn::Activation::ReLU, true}};
  Generator other_gen{2};
  nn::MLP target{6, {5, 4}, other_gen, {nn::Activation::ReLU, true}};
};

}  // namespace

TEST_F(Serialize, RoundTripParamsAndBuffers) {
  const fs::path file = saved();
  ASSERT_NE(state_of(source), state_of(target));  // differently seeded, default buffers
  nn::load(target, file);
  EXPECT_EQ(state_of(source), state_of(target));
  // The loaded model computes the same outputs (eval uses the loaded running stats).
  source.eval();
  target.eval();
  Tensor x = Tensor::normal({3, 6}, 0, 1, gen);
  EXPECT_EQ(source(x).to_vector<float>(), target(x).to_vector<float>());
  // Loading copies: the target's parameters keep requires_grad and their own storage.
  for (const auto& [name, p] : target.named_parameters())
    EXPECT_TRUE(p.requires_grad()) << name;
  EXPECT_NE(source.parameters()[0].raw(), target.parameters()[0].raw());
}

TEST_F(Serialize, TensorsRoundTripWithDtypes) {
  const fs::path file = dir / "tensors.bin";
  nn::NamedTensors tensors = {
      {"a", Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3})},
      {"b", Tensor::from_vector(std::vector<double>{0.1, -0.2}, {2})},
      {"c", Tensor::from_vector(std::vector<int64_t>{7}, {1})},
      {"scalar", Tensor::full({}, 2.5)}};
  nn::save_tensors(tensors, file);
  const nn::NamedTensors back = nn::load_tensors(file);
  ASSERT_EQ(back.size(), 4u);
  EXPECT_EQ(back[0].first, "a");
  EXPECT_EQ(back[0].second.shape(), (Shape{2, 3}));
  EXPECT_EQ(back[0].second.to_vector<float>(), tensors[0].second.to_vector<float>());
  EXPECT_EQ(back[1].second.to_vector<double>(), (std::vector<double>{0.1, -0.2}));
  EXPECT_EQ(back[2].second.to_vector<int64_t>(), (std::vector<int64_t>{7}));
  EXPECT_EQ(back[3].second.shape(), Shape{});
  EXPECT_EQ(back[3].first, "scalar");
}

TEST_F(Serialize, NoTemporaryFileLeft) {
  const fs::path file = saved();
  nn::save(source, file);  // overwriting an existing file as well
  EXPECT_TRUE(fs::exists(file));
  for (const auto& entry : fs::directory_iterator(dir))
    EXPECT_EQ(entry.path().filename(), "model.bin") << "leftover " << entry.path();
  EXPECT_FALSE(fs::exists(dir / "model.bin.tmp"));
}

TEST_F(Serialize, MissingFile) {
  const auto before = state_of(target);
  const fs::path file = dir / "absent.bin";
  EXPECT_THAT(message_of_load(target, file), HasSubstr(file.string()));
  EXPECT_EQ(state_of(target), before);
}

TEST_F(Serialize, TruncatedAtSeveralOffsets) {
  const std::string bytes = read_bytes(saved());
  const auto before = state_of(target);
  const fs::path cut = dir / "cut.bin";
  for (size_t at : {size_t{0}, size_t{3}, size_t{8}, size_t{12}, size_t{16}, size_t{30},
                    bytes.size() / 2, bytes.size() - 9, bytes.size() - 8, bytes.size() - 1}) {
    write_bytes(cut, bytes.substr(0, at));
    const std::string m = message_of_load(target, cut);
    EXPECT_THAT(m, HasSubstr(cut.string())) << "cut at " << at;
    EXPECT_EQ(state_of(target), before) << "cut at " << at;
  }
}

TEST_F(Serialize, FlippedByteFailsTheChecksum) {
  const std::string bytes = read_bytes(saved());
  const auto before = state_of(target);
  const fs::path bad = dir / "flipped.bin";
  for (size_t at : {size_t{9}, size_t{20}, bytes.size() / 2, bytes.size() - 20, bytes.size() - 1}) {
    std::string copy = bytes;
    copy[at] = static_cast<char>(copy[at] ^ 0x10);
    write_bytes(bad, copy);
    const std::string m = message_of_load(target, bad);
    EXPECT_THAT(m, HasSubstr("checksum")) << "flip at " << at;
    EXPECT_EQ(state_of(target), before) << "flip at " << at;
  }
}

TEST_F(Serialize, WrongMagic) {
  std::string bytes = read_bytes(saved());
  bytes[0] = 'X';
  const fs::path bad = dir / "magic.bin";
  write_bytes(bad, bytes);
  const auto before = state_of(target);
  const std::string m = message_of_load(target, bad);
  EXPECT_THAT(m, HasSubstr("magic"));
  EXPECT_THAT(m, HasSubstr(bad.string()));
  EXPECT_EQ(state_of(target), before);
  write_bytes(bad, "not a parameter file at all");
  EXPECT_THAT(message_of_load(target, bad), HasSubstr("magic"));
}

TEST_F(Serialize, UnsupportedVersionWithValidChecksum) {
  std::string bytes = read_bytes(saved());
  std::string body = bytes.substr(0, bytes.size() - 8);
  const uint32_t version = 99;
  std::memcpy(body.data() + 8, &version, 4);
  const fs::path bad = dir / "version.bin";
  write_bytes(bad, with_checksum(body));
  const auto before = state_of(target);
  EXPECT_THAT(message_of_load(target, bad), HasSubstr("version 99"));
  EXPECT_EQ(state_of(target), before);
}

TEST_F(Serialize, OtherLayerSizesNameTheTensor) {
  const fs::path file = saved();
  Generator g(3);
  nn::MLP other(6, {5, 3}, g, {nn::Activation::ReLU, true});  // fc.1 is [3, 5] instead of [4, 5]
  const auto before = state_of(other);
  const std::string m = message_of_load(other, file);
  EXPECT_THAT(m, HasSubstr("fc.1.weight"));
  EXPECT_THAT(m, HasSubstr("[4, 5]"));
  EXPECT_THAT(m, HasSubstr("[3, 5]"));
  EXPECT_EQ(state_of(other), before);  // fc.0 matched but was not written either
}

TEST_F(Serialize, OtherNamesNameTheTensor) {
  nn::NamedTensors renamed = source.named_parameters();
  for (auto& b : source.named_buffers())
    renamed.push_back(b);
  renamed[2].first = "fc.1.kernel";
  const fs::path file = dir / "renamed.bin";
  nn::save_tensors(renamed, file);
  const auto before = state_of(target);
  EXPECT_THAT(message_of_load(target, file), HasSubstr("fc.1.weight"));
  EXPECT_EQ(state_of(target), before);
}

TEST_F(Serialize, FewerTensorsThanTheModule) {
  Generator g(4);
  nn::MLP plain(6, {5, 4}, g);  // no batch norm: 4 tensors instead of 12
  const fs::path file = dir / "plain.bin";
  nn::save(plain, file);
  const auto before = state_of(target);
  const std::string m = message_of_load(target, file);
  EXPECT_THAT(m, HasSubstr("4"));
  EXPECT_THAT(m, HasSubstr("12"));
  EXPECT_EQ(state_of(target), before);
}

namespace {

/// A parameter-file body (no checksum) with one tensor header: name, dtype, dims; then
/// `payload` bytes of data.
std::string one_tensor_body(uint32_t count, const std::string& name, uint8_t dtype,
                            const std::vector<int64_t>& dims, size_t payload) {
  std::string body("CLRNPARM", 8);
  auto put = [&](auto v) { body.append(reinterpret_cast<const char*>(&v), sizeof(v)); };
  put(uint32_t{1});
  put(count);
  put(static_cast<uint32_t>(name.size()));
  body += name;
  put(dtype);
  put(static_cast<uint32_t>(dims.size()));
  for (int64_t d : dims)
    put(d);
  body.append(payload, '\0');
  return body;
}

std::string message_of_load_tensors(const fs::path& file) {
  try {
    nn::load_tensors(file);
  } catch (const IOError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "load_tensors of " << file << " threw another type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "load_tensors of " << file << " did not throw";
  return "";
}

}  // namespace

// The checksum is no defence (anyone can recompute FNV-1a): declared sizes are checked
// against the bytes that are really there, with overflow-checked arithmetic, before any
// allocation.
TEST_F(Serialize, HugeDeclaredShapeWithValidChecksum) {
  const fs::path bad = dir / "huge.bin";
  // float32[2^62]: 2^64 bytes, which wrapped to 0 and "loaded" a 2^62-element tensor.
  write_bytes(bad, with_checksum(one_tensor_body(1, "w", 0, {int64_t{1} << 62}, 0)));
  std::string m = message_of_load_tensors(bad);
  EXPECT_THAT(m, HasSubstr(bad.string()));
  EXPECT_THAT(m, HasSubstr("'w'"));
  EXPECT_THAT(m, HasSubstr("[4611686018427387904]"));
  EXPECT_THAT(m, HasSubstr("byte offset"));
  // float32[2^32, 2^32]: the element count itself overflows.
  write_bytes(bad,
              with_checksum(one_tensor_body(1, "w", 0, {int64_t{1} << 32, int64_t{1} << 32}, 0)));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("[4294967296, 4294967296]"));
  // A representable size that is larger than what is left in the file.
  write_bytes(bad, with_checksum(one_tensor_body(1, "w", 1, {1000, 1000}, 16)));
  m = message_of_load_tensors(bad);
  EXPECT_THAT(m, HasSubstr("8000000"));
  EXPECT_THAT(m, HasSubstr("16"));
  // And through nn::load, the module stays untouched.
  const auto before = state_of(target);
  write_bytes(bad, with_checksum(one_tensor_body(1, "fc.0.weight", 0, {int64_t{1} << 62}, 0)));
  EXPECT_THAT(message_of_load(target, bad), HasSubstr("fc.0.weight"));
  EXPECT_EQ(state_of(target), before);
}

TEST_F(Serialize, DeclaredCountsBoundedByTheFileSize) {
  const fs::path bad = dir / "counts.bin";
  // 2^32 - 1 tensors in a file of a few dozen bytes.
  write_bytes(bad, with_checksum(one_tensor_body(0xffffffffu, "w", 0, {1}, 4)));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("4294967295 tensors"));
  // A name longer than the file.
  std::string body = one_tensor_body(1, "w", 0, {1}, 4);
  const uint32_t length = 0xfffffff0u;
  std::memcpy(body.data() + 16, &length, 4);
  write_bytes(bad, with_checksum(body));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("name length 4294967280"));
  // A rank whose dimensions do not fit in the rest of the file (the checksum is not data).
  body = one_tensor_body(1, "w", 0, {1}, 0);
  const uint32_t rank = 8;
  std::memcpy(body.data() + 22, &rank, 4);
  write_bytes(bad, with_checksum(body));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("rank 8"));
  // Data that would run into the checksum.
  write_bytes(bad, with_checksum(one_tensor_body(1, "w", 1, {1}, 0)));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("float64[1]"));
  // Negative dimensions and unknown dtypes are still refused.
  write_bytes(bad, with_checksum(one_tensor_body(1, "w", 0, {-4}, 0)));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("negative"));
  write_bytes(bad, with_checksum(one_tensor_body(1, "w", 7, {1}, 4)));
  EXPECT_THAT(message_of_load_tensors(bad), HasSubstr("dtype"));
  // An empty tensor with a large (representable) dimension is a valid file.
  write_bytes(bad, with_checksum(one_tensor_body(1, "w", 0, {int64_t{1} << 40, 0}, 0)));
  const nn::NamedTensors ok = nn::load_tensors(bad);
  ASSERT_EQ(ok.size(), 1u);
  EXPECT_EQ(ok[0].second.shape(), (Shape{int64_t{1} << 40, 0}));
}
