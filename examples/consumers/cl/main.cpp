// clarena::cl from outside: a gzip IDX round trip (zlib) and CL metrics as JSON (nlohmann).
#include <clarena/cl/idx.h>
#include <clarena/cl/metrics.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <vector>

int main() {
  namespace cl = clarena::cl;
  const auto path = std::filesystem::temp_directory_path() / "clarena_consumer_cl.idx.gz";
  const std::vector<uint8_t> pixels{0, 1, 2, 250, 251, 252};
  cl::write_idx(path, {2, 3}, pixels, /*gzip=*/true);
  const cl::IdxArray back = cl::read_idx(path);
  std::filesystem::remove(path);

  cl::AccuracyMatrix m(2);
  m.set(1, 1, 0.9);
  m.set(2, 1, 0.7);
  m.set(2, 2, 0.8);
  const nlohmann::json j = cl::metrics_json(m);
  const bool ok = back.data == pixels && back.dims == std::vector<int64_t>{2, 3} &&
                  std::abs(cl::average_accuracy(m, 2) - 0.75) < 1e-12 &&
                  std::abs(cl::backward_transfer(m, 2) + 0.2) < 1e-12 && !j.empty();
  std::printf("consumer cl: %s\n", ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
