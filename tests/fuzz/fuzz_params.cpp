// libFuzzer harness: the parameter-file loader (nn/src/serialize.cpp), through load_tensors
// and through Module loading. Whatever it accepts must survive a save/load round trip.
#include <cstring>

#include "clarena/clarena.h"
#include "fuzz_common.h"

namespace {

bool same_bytes(const clarena::Tensor& a, const clarena::Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() && a.nbytes() == b.nbytes() &&
         (a.nbytes() == 0 || std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace clarena;
  const auto file = fuzz::write_file("input.params", fuzz::as_text(data, size));
  nn::NamedTensors loaded;
  try {
    loaded = nn::load_tensors(file);
  } catch (const Error&) {
    loaded.clear();
  }
  for (const auto& [name, t] : loaded) {
    // The shape must describe exactly the bytes behind it (a wrapped size once gave a
    // 2^62-element tensor 64 bytes of storage), and every element must be readable.
    if (t.impl_ptr()->storage->bytes != t.nbytes())
      fuzz::violated("a loaded tensor's shape does not match its storage");
    double total = 0;
    if (t.dtype() == DType::Int64)
      for (int64_t v : t.to_vector<int64_t>())
        total += static_cast<double>(v);
    else
      total += sum(t).item();
    (void)total;
  }
  if (!loaded.empty()) {
    const auto again = fuzz::scratch_dir() / "again.params";
    nn::save_tensors(loaded, again);
    const nn::NamedTensors back = nn::load_tensors(again);
    if (back.size() != loaded.size()) fuzz::violated("round trip changed the tensor count");
    for (size_t i = 0; i < back.size(); ++i)
      if (back[i].first != loaded[i].first || !same_bytes(back[i].second, loaded[i].second))
        fuzz::violated("round trip changed a tensor");
  }
  // The seed corpus holds files of this very model, so mutations reach the module checks.
  static Generator gen(0);
  static nn::MLP model(4, {3, 2}, gen, {nn::Activation::ReLU, true});
  try {
    nn::load(model, file);
  } catch (const Error&) {
  }
  return 0;
}
