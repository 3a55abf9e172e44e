// LibTorch reference benchmark: one full training step of an MLP backbone + linear head.
//
// Mirrors our engine's bench_step so that rows line up (BM_Step/<model>/<mode>/<batch>):
//   forward:  backbone Linear->ReLU layers (every layer followed by ReLU, including the last),
//             then a Linear head; cross_entropy (mean) loss.
//   modes:    trainable     forward + loss + backward + SGD(lr 0.01, momentum 0.9) step + zero_grad
//             frozen        backbone requires_grad_(false); only the head is trained/optimized
//             forward_only  NoGradGuard, forward + loss only
//   models:   default  784 -> 256 -> 256, head 256 -> 10
//             deep     784 -> 8 hidden layers of 256, head 256 -> 10
//             wide     1024 -> 4096 -> 4096, head 4096 -> 100
//   batches:  1, 32, 128, 512, 2048. wide skips 2048 (all modes) unless CLARENA_BENCH_WIDE_2048=1:
//             a trainable step there is ~246 GFLOP, ~1.3 s on 2 cores, too slow for the grid.
//
// Counters: FLOPs per step (2*M*N*K per GEMM executed), GFLOP/s (rate), batch.
// Threads: CLARENA_BENCH_THREADS (default 2) -> torch::set_num_threads. Debian's LibTorch uses the
// libblas.so.3 selected by update-alternatives; run bench/setup_openblas.sh to get OpenBLAS.
// Run on an otherwise idle machine: with the default (spinning) OMP_WAIT_POLICY, any other CPU load
// on a 2-core box slows LibTorch's OpenMP regions by 10-100x (OMP_WAIT_POLICY=passive is robust to
// that but a bit slower when idle). The policy in effect is printed in the context.

#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

struct ModelSpec {
  std::string name;
  std::vector<int64_t> backbone;  // layer widths: input, hidden..., last hidden
  int64_t classes;
};

enum class Mode { kTrainable, kFrozen, kForwardOnly };

const char* ModeName(Mode m) {
  switch (m) {
    case Mode::kTrainable:
      return "trainable";
    case Mode::kFrozen:
      return "frozen";
    case Mode::kForwardOnly:
      return "forward_only";
  }
  return "?";
}

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(const ModelSpec& spec) {
    for (size_t i = 0; i + 1 < spec.backbone.size(); ++i) {
      layers.push_back(register_module("fc" + std::to_string(i),
                                       torch::nn::Linear(spec.backbone[i], spec.backbone[i + 1])));
    }
    head = register_module("head", torch::nn::Linear(spec.backbone.back(), spec.classes));
  }

  torch::Tensor forward(torch::Tensor x) {
    for (auto& layer : layers)
      x = torch::relu(layer->forward(x));
    return head->forward(x);
  }

  std::vector<torch::nn::Linear> layers;
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(Mlp);

// FLOPs per step, counting 2*M*N*K per GEMM executed.
double StepFlops(const ModelSpec& spec, Mode mode, int64_t batch) {
  const double b = static_cast<double>(batch);
  double fwd = 0.0;
  for (size_t i = 0; i + 1 < spec.backbone.size(); ++i)
    fwd += 2.0 * b * spec.backbone[i] * spec.backbone[i + 1];
  const double head = 2.0 * b * spec.backbone.back() * spec.classes;
  fwd += head;
  switch (mode) {
    case Mode::kForwardOnly:
      return fwd;
    case Mode::kFrozen:
      return fwd + head;  // + head weight gradient only
    case Mode::kTrainable: {
      // forward + weight gradients (same as forward) + input gradients except the first layer's.
      const double first = 2.0 * b * spec.backbone[0] * spec.backbone[1];
      return 3.0 * fwd - first;
    }
  }
  return fwd;
}

void BM_Step(benchmark::State& state, const ModelSpec& spec, Mode mode, int64_t batch) {
  torch::manual_seed(1234);
  Mlp model(spec);
  const torch::Tensor x = torch::randn({batch, spec.backbone.front()});
  const torch::Tensor y = torch::randint(0, spec.classes, {batch}, torch::kLong);

  std::vector<torch::Tensor> params;
  if (mode == Mode::kFrozen) {
    for (auto& layer : model->layers)
      for (auto& p : layer->parameters())
        p.requires_grad_(false);
    params = model->head->parameters();
  } else {
    params = model->parameters();
  }
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.01).momentum(0.9));
  namespace F = torch::nn::functional;

  auto step = [&] {
    if (mode == Mode::kForwardOnly) {
      torch::NoGradGuard no_grad;
      return F::cross_entropy(model->forward(x), y);
    }
    torch::Tensor loss = F::cross_entropy(model->forward(x), y);
    loss.backward();
    opt.step();
    // Optimizer::zero_grad() in 1.13 zeroes in place; Module::zero_grad has set_to_none.
    model->zero_grad(/*set_to_none=*/true);
    return loss;
  };

  // One untimed step: creates the momentum buffers and touches all memory once, so that runs with
  // few iterations (wide model) are not dominated by first-step allocation.
  benchmark::DoNotOptimize(step().data_ptr());
  for (auto _ : state) {
    torch::Tensor loss = step();
    benchmark::DoNotOptimize(loss.data_ptr());
  }

  const double flops = StepFlops(spec, mode, batch);
  state.counters["FLOPs"] = benchmark::Counter(flops);
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["batch"] = benchmark::Counter(static_cast<double>(batch));
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end != v && n > 0) ? static_cast<int>(n) : fallback;
}

// Which BLAS libraries are mapped into this process (after a first matmul).
std::string MappedBlas() {
  std::ifstream maps("/proc/self/maps");
  std::set<std::string> libs;
  std::string line;
  while (std::getline(maps, line)) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    const std::string base = std::filesystem::path(path).filename().string();
    if (base.find("blas") != std::string::npos) libs.insert(path);
  }
  std::string out;
  for (const auto& l : libs) {
    std::error_code ec;
    const auto real = std::filesystem::canonical(l, ec);
    out += (out.empty() ? "" : ", ") + (ec ? l : real.string());
  }
  return out.empty() ? "none mapped" : out;
}

std::string BlasDescription(int* openblas_threads) {
  std::string desc;
  // OpenBLAS exports openblas_get_config / openblas_get_num_threads; the reference BLAS does not.
  using ConfigFn = char* (*)();
  using ThreadsFn = int (*)();
  auto config = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  auto threads = reinterpret_cast<ThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  *openblas_threads = threads != nullptr ? threads() : 0;
  if (config != nullptr) {
    desc = std::string("OpenBLAS (") + config() + ")";
  } else {
    desc = "NOT OpenBLAS (reference BLAS? run bench/setup_openblas.sh)";
  }
  std::error_code ec;
  const auto alt =
      std::filesystem::read_symlink("/etc/alternatives/libblas.so.3-x86_64-linux-gnu", ec);
  desc += "; libblas.so.3 alternative -> " + (ec ? std::string("?") : alt.string());
  desc += "; mapped: " + MappedBlas();
  return desc;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = EnvInt("CLARENA_BENCH_THREADS", 2);
  torch::set_num_threads(threads);

  // First matmul so that libblas is resolved/initialized before we inspect it.
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor a = torch::randn({64, 64});
    benchmark::DoNotOptimize(torch::mm(a, a).sum().item<float>());
  }

  int openblas_threads = 0;
  const std::string blas = BlasDescription(&openblas_threads);
  const bool is_openblas = blas.rfind("OpenBLAS", 0) == 0;
  std::ostringstream summary;
  summary << "LibTorch " << TORCH_VERSION << " on " << (is_openblas ? "OpenBLAS" : "non-OpenBLAS")
          << " with " << torch::get_num_threads() << " threads";
  benchmark::AddCustomContext("libtorch", summary.str());
  benchmark::AddCustomContext("libtorch_version", TORCH_VERSION);
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()));
  benchmark::AddCustomContext("openblas_threads", std::to_string(openblas_threads));
  benchmark::AddCustomContext("blas", blas);
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  benchmark::AddCustomContext("OMP_WAIT_POLICY", wait_policy != nullptr ? wait_policy : "(unset)");

  static const std::vector<ModelSpec> kModels = {
      {"default", {784, 256, 256}, 10},
      {"deep", {784, 256, 256, 256, 256, 256, 256, 256, 256}, 10},
      {"wide", {1024, 4096, 4096}, 100},
  };
  const bool wide_2048 = EnvInt("CLARENA_BENCH_WIDE_2048", 0) != 0;
  const std::vector<int64_t> batches = {1, 32, 128, 512, 2048};
  const Mode modes[] = {Mode::kTrainable, Mode::kFrozen, Mode::kForwardOnly};

  for (const auto& spec : kModels) {
    for (const Mode mode : modes) {
      for (const int64_t batch : batches) {
        if (spec.name == "wide" && batch == 2048 && !wide_2048) continue;
        const std::string name =
            "BM_Step/" + spec.name + "/" + ModeName(mode) + "/" + std::to_string(batch);
        benchmark::RegisterBenchmark(
            name.c_str(),
            [&spec, mode, batch](benchmark::State& st) { BM_Step(st, spec, mode, batch); })
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
