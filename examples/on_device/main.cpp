// On-device learning, the case the Fix algorithm exists for: a backbone trained elsewhere by
// `clarena train` is loaded and frozen, and only a small head is learnt for each new task from
// a stream of images. The same steps are then run training the whole network, and the two are
// printed side by side: median step time, peak tensor memory, graph size, accuracy.
//
//   on_device <run_dir | model.params> [--data DIR] [--tasks 1-5] [--steps N] [--batch N]
//             [--lr X] [--device cpu|cuda]
//
// The MLP's sizes (and whether it has batch norm) come from the stored parameter shapes. New
// task k learns classes k and k+5 of DIR's test split (Split Fashion-MNIST pairs 0/1, 2/3...);
// 80% of a pair's images are streamed in mini-batches, 20% held out. IDX files may be plain or
// gzipped; .gz goes through the system's `gzip -dc`, so nothing but clarena is linked.
#include <clarena/clarena.h>
#include <clarena/core/runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace fs = std::filesystem;
using namespace clarena;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// --- IDX (MNIST format): 0, 0, 0x08 (unsigned bytes), rank, big-endian u32 dims, the bytes --
std::string read_idx(const fs::path& dir, const std::string& name, int rank,
                     std::vector<int64_t>& dims) {
  fs::path file = dir / name;
  if (!fs::exists(file)) file += ".gz";
  if (!fs::is_regular_file(file)) throw IOError("no " + name + "[.gz] in " + dir.string());
  std::string bytes;
  if (file.extension() != ".gz") {
    std::ifstream f(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
    if (f.bad()) throw IOError("cannot read " + file.string());
  } else {
    std::string quoted = "'";
    for (char c : file.string())
      quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    FILE* pipe = popen(("gzip -dc < " + quoted + "' 2>/dev/null").c_str(), "r");
    if (!pipe) throw IOError("cannot run gzip to read " + file.string());
    char buf[1 << 16];
    for (size_t n; (n = fread(buf, 1, sizeof buf, pipe)) > 0;)
      bytes.append(buf, n);
    if (pclose(pipe) != 0) throw IOError(file.string() + ": not a gzip file (gzip -dc failed)");
  }
  auto fail = [&](const std::string& why, size_t offset) {
    throw IOError("IDX file " + file.string() + ": " + why + " at byte offset " +
                  std::to_string(offset));
  };
  const size_t header = 4 + 4 * static_cast<size_t>(rank);
  if (bytes.size() < 4 || bytes[0] || bytes[1] || bytes[2] != 0x08 || bytes[3] != rank)
    fail("bad magic number (want unsigned bytes in " + std::to_string(rank) + " dimensions)", 0);
  if (bytes.size() < header) fail("truncated header", bytes.size());
  size_t count = 1;
  for (int d = 0; d < rank; ++d) {
    const auto* p = reinterpret_cast<const unsigned char*>(bytes.data()) + 4 + 4 * d;
    const size_t n = size_t(p[0]) << 24 | size_t(p[1]) << 16 | size_t(p[2]) << 8 | p[3];
    if (n == 0 || count > (bytes.size() - header) / n)
      fail("dimension " + std::to_string(n) + " does not fit the " +
               std::to_string(bytes.size() - header) + " data bytes",
           4 + 4 * d);
    count *= n;
    dims.push_back(static_cast<int64_t>(n));
  }
  if (bytes.size() != header + count) fail("unexpected bytes after the data", header + count);
  return bytes.substr(header);
}

// --- the backbone: an MLP whose sizes come from the checkpoint's `backbone.*` shapes --------
struct Backbone {
  fs::path file;
  int64_t input_dim = 0;
  std::vector<int64_t> hidden;
  bool batch_norm = false;
  std::map<std::string, Tensor> tensors;  // names without "backbone."

  /// A fresh MLP holding the stored values; every tensor it has must be stored, shape and all.
  std::shared_ptr<nn::MLP> make(Device device) const {
    Generator unused(0);
    auto mlp = std::make_shared<nn::MLP>(input_dim, hidden, unused,
                                         nn::MLPOptions{.batch_norm = batch_norm});
    nn::NamedTensors targets = mlp->named_parameters();
    for (auto& entry : mlp->named_buffers())
      targets.push_back(entry);
    const std::string where = "checkpoint " + file.string() + ": ";
    for (auto& [name, target] : targets) {
      auto it = tensors.find(name);
      if (it == tensors.end()) throw IOError(where + "no backbone." + name);
      if (it->second.shape() != target.shape() || it->second.dtype() != target.dtype())
        throw ShapeError(where + "backbone." + name + " is " + it->second.str() +
                         ", the MLP inferred from the checkpoint expects " + target.str());
      target.copy_(it->second);
    }
    if (targets.size() != tensors.size())
      throw IOError(where + std::to_string(tensors.size()) + " backbone tensors, the MLP " +
                    "inferred from them has only " + std::to_string(targets.size()));
    mlp->to(device);
    return mlp;
  }
};

Backbone read_backbone(const fs::path& file) {
  Backbone b{.file = file};
  for (auto& [name, t] : nn::load_tensors(file))
    if (name.rfind("backbone.", 0) == 0) b.tensors.emplace(name.substr(9), t);
  for (int i = 0; b.tensors.count("fc." + std::to_string(i) + ".weight"); ++i) {
    const Tensor& w = b.tensors.at("fc." + std::to_string(i) + ".weight");
    if (w.dim() != 2 || (i > 0 && w.size(1) != b.hidden.back()))
      throw ShapeError("checkpoint " + file.string() + ": backbone.fc." + std::to_string(i) +
                       ".weight is " + w.str() + ", which does not follow the layer before it");
    if (i == 0) b.input_dim = w.size(1);
    b.hidden.push_back(w.size(0));
  }
  if (b.hidden.empty())
    throw IOError("checkpoint " + file.string() + " has no backbone.fc.0.weight: not one " +
                  "shared MLP backbone (an Independent run keeps one per task)");
  b.batch_norm = b.tensors.count("fc_bn.0.weight") > 0;
  b.make(Device::cpu());  // checks every stored tensor against the inferred MLP
  return b;
}

// --- learning the new tasks, with the backbone frozen or not --------------------------------
struct Options {
  fs::path checkpoint, data = "/usr/share/datasets/fashion-mnist";
  int tasks = 5, steps = 50, batch = 32;
  double lr = 0.05;
  Device device = Device::cpu();
};

struct Stream {
  int64_t dim = 0;
  std::vector<float> images;  // normalised by their own mean and std
  std::string labels;
};

struct Result {
  std::vector<double> step_ms;
  int64_t peak = 0, step_peak = 0, nodes = 0, saved = 0;  // bytes, bytes, per step, bytes
  std::vector<double> acc_learnt, acc_final;  // per task: right after it, after the last task
};

Result run(const Backbone& spec, const Stream& s, const Options& o, bool frozen) {
  const int64_t before = memory_stats(o.device).bytes_in_use;  // the checkpoint's own copy
  auto backbone = spec.make(o.device);
  if (frozen) {
    backbone->requires_grad_(false);  // Fix: the backbone's forward records nothing
    backbone->eval();
  }
  Generator gen(0);  // the same heads in both runs
  std::vector<std::shared_ptr<nn::Linear>> heads;
  std::vector<std::vector<int64_t>> held_out;
  auto batch = [&](const std::vector<int64_t>& rows, int task) {
    std::vector<float> x;
    std::vector<int64_t> y;
    for (int64_t r : rows) {
      x.insert(x.end(), s.images.begin() + r * s.dim, s.images.begin() + (r + 1) * s.dim);
      y.push_back(s.labels[r] == task + 5);
    }
    const int64_t n = static_cast<int64_t>(rows.size());
    return std::pair{Tensor::from_vector(x, {n, s.dim}).to(o.device),
                     Tensor::from_vector(y, {n}).to(o.device)};
  };
  auto evaluate = [&](int task) {
    autograd::NoGradGuard no_grad;
    backbone->eval();
    auto [x, y] = batch(held_out[task], task);
    const double acc = accuracy((*heads[task])(backbone->forward(x)), y);
    backbone->train(!frozen);
    return acc;
  };
  Result r;
  for (int task = 0; task < o.tasks; ++task) {
    std::vector<int64_t> rows;
    for (size_t i = 0; i < s.labels.size(); ++i)
      if (s.labels[i] == task || s.labels[i] == task + 5) rows.push_back(static_cast<int64_t>(i));
    const size_t train = rows.size() * 4 / 5;
    if (train < static_cast<size_t>(o.batch) || train == rows.size())
      throw ValueError("classes " + std::to_string(task) + " and " + std::to_string(task + 5) +
                       " have " + std::to_string(rows.size()) + " images, too few for --batch " +
                       std::to_string(o.batch));
    held_out.emplace_back(rows.begin() + train, rows.end());
    heads.push_back(std::make_shared<nn::Linear>(backbone->output_dim(), 2, gen));
    heads.back()->to(o.device);
    std::vector<Tensor> params = heads.back()->parameters();
    if (!frozen)
      for (const Tensor& p : backbone->parameters())
        params.push_back(p);
    optim::SGD sgd(params, {.lr = o.lr});
    for (int step = 0; step < o.steps; ++step) {
      std::vector<int64_t> which;
      for (int i = 0; i < o.batch; ++i)
        which.push_back(rows[(static_cast<size_t>(step) * o.batch + i) % train]);
      auto [x, y] = batch(which, task);
      const int64_t between = memory_stats(o.device).bytes_in_use;
      reset_peak_memory_stats(o.device);
      autograd::reset_stats();
      r.step_ms.push_back(time_ms(o.device, [&] {
        Tensor loss = cross_entropy((*heads[task])(backbone->forward(x)), y);
        loss.backward();
        sgd.step();
        sgd.zero_grad();
      }));
      const int64_t peak = memory_stats(o.device).peak_bytes_in_use;
      r.peak = std::max(r.peak, peak - before);
      r.step_peak = std::max(r.step_peak, peak - between);
      r.nodes = autograd::stats().nodes_recorded;
      r.saved = std::max(r.saved, autograd::stats().peak_saved_bytes);
    }
    r.acc_learnt.push_back(evaluate(task));
  }
  for (int task = 0; task < o.tasks; ++task)
    r.acc_final.push_back(evaluate(task));
  return r;
}

Options parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::pair<int*, int>> ints{
      {"--tasks", {&o.tasks, 5}}, {"--steps", {&o.steps, 1000000}}, {"--batch", {&o.batch, 65536}}};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i], value = i + 1 < argc ? argv[i + 1] : "";
    if (arg == "-h" || arg == "--help") throw UsageError("");
    if (arg.rfind("--", 0) != 0) {
      if (!o.checkpoint.empty()) throw UsageError("one checkpoint only, got '" + arg + "' too");
      o.checkpoint = arg;
      continue;
    }
    if (i + 1 == argc) throw UsageError(arg + " needs a value");
    ++i;
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    const bool number = !value.empty() && !*end && std::isfinite(v);
    if (auto it = ints.find(arg); it != ints.end()) {
      if (!number || v != std::floor(v) || v < 1 || v > it->second.second)
        throw UsageError(arg + " wants an integer in 1.." + std::to_string(it->second.second) +
                         ", got '" + value + "'");
      *it->second.first = static_cast<int>(v);
    } else if (arg == "--lr") {
      if (!number || v <= 0) throw UsageError("--lr wants a positive number, got '" + value + "'");
      o.lr = v;
    } else if (arg == "--data") {
      o.data = value;
    } else if (arg == "--device") {
      try {
        o.device = Device::parse(value);
      } catch (const Error& e) {
        throw UsageError(e.what());
      }
    } else {
      throw UsageError("unknown option " + arg);
    }
  }
  if (o.checkpoint.empty()) throw UsageError("no checkpoint given");
  if (fs::is_directory(o.checkpoint)) o.checkpoint /= "checkpoint/model.params";
  if (!fs::is_regular_file(o.checkpoint))
    throw IOError("no checkpoint at " + o.checkpoint.string() +
                  " (give a run's output_dir or its checkpoint/model.params)");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    const Backbone backbone = read_backbone(o.checkpoint);
    std::vector<int64_t> dims, count;
    const std::string pixels = read_idx(o.data, "t10k-images-idx3-ubyte", 3, dims);
    Stream s{dims[1] * dims[2], {}, read_idx(o.data, "t10k-labels-idx1-ubyte", 1, count)};
    if (dims[0] != count[0])
      throw IOError(o.data.string() + ": " + std::to_string(dims[0]) + " images but " +
                    std::to_string(count[0]) + " labels");
    if (s.dim != backbone.input_dim)
      throw ShapeError("images of " + std::to_string(s.dim) + " pixels, the backbone takes " +
                       std::to_string(backbone.input_dim) + " inputs");
    double mean = 0, sq = 0;
    for (unsigned char c : pixels)
      mean += c / 255.0, sq += c * c / 65025.0;
    mean /= pixels.size();
    const double sd = std::sqrt(std::max(sq / pixels.size() - mean * mean, 1e-12));
    for (unsigned char c : pixels)
      s.images.push_back(static_cast<float>((c / 255.0 - mean) / sd));

    const Result a = run(backbone, s, o, /*frozen=*/true), b = run(backbone, s, o, false);
    std::string sizes;
    for (int64_t h : backbone.hidden)
      sizes += (sizes.empty() ? "" : ", ") + std::to_string(h);
    std::printf("backbone: MLP %lld -> [%s]%s, from %s\n", (long long)backbone.input_dim,
                sizes.c_str(), backbone.batch_norm ? " with batch norm" : "", o.checkpoint.c_str());
    std::printf("%d new tasks (classes k and k+5), %d steps of %d images each, %s, %d threads\n\n",
                o.tasks, o.steps, o.batch, o.device.str().c_str(), num_threads());
    auto median = [](std::vector<double> v) {
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    auto row = [](const char* what, double x, double y) {
      std::printf("%-38s %16.4g %16.4g\n", what, x, y);
    };
    std::printf("%-38s %16s %16s\n", "", "frozen backbone", "whole network");
    row("step time, median (ms)", median(a.step_ms), median(b.step_ms));
    row("peak tensor memory, model + step (KiB)", a.peak / 1024.0, b.peak / 1024.0);
    row("  of which the step (KiB)", a.step_peak / 1024.0, b.step_peak / 1024.0);
    row("graph nodes per step", a.nodes, b.nodes);
    row("saved activations, peak (KiB)", a.saved / 1024.0, b.saved / 1024.0);
    std::printf("held-out accuracy, after the task / after the last task:\n");
    for (int t = 0; t < o.tasks; ++t)
      std::printf("  task %d: classes %d and %d %22.3f / %.3f %10.3f / %.3f\n", t + 1, t, t + 5,
                  a.acc_learnt[t], a.acc_final[t], b.acc_learnt[t], b.acc_final[t]);
    return 0;
  } catch (const UsageError& e) {
    if (*e.what()) std::fprintf(stderr, "on_device: %s\n", e.what());
    std::fprintf(stderr,
                 "usage: on_device <run_dir | model.params> [--data DIR] [--tasks 1-5] "
                 "[--steps N] [--batch N] [--lr X] [--device cpu|cuda]\n");
    return *e.what() ? 2 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "on_device: %s\n", e.what());
    return 1;
  }
}
