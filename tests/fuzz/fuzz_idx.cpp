// libFuzzer harness: the IDX reader (cl/src/idx.cpp), plain and gzip. Whatever it accepts
// must survive a write_idx/read_idx round trip unchanged.
#include <cstdio>

#include "clarena/cl/idx.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace clarena;
  const auto file = fuzz::write_file("input.idx", fuzz::as_text(data, size));
  cl::IdxArray a;
  try {
    a = cl::read_idx(file);
  } catch (const Error&) {
    return 0;
  }
  uint64_t product = 1;
  for (int64_t d : a.dims) {
    if (d < 0) fuzz::violated("read_idx returned a negative dimension");
    product *= static_cast<uint64_t>(d);
  }
  if (a.dims.empty() || product != a.data.size())
    fuzz::violated("read_idx returned data that does not fill its dims");
  for (bool gzip : {false, true}) {
    const auto again = fuzz::scratch_dir() / (gzip ? "again.idx.gz" : "again.idx");
    cl::write_idx(again, a.dims, a.data, gzip);
    const cl::IdxArray b = cl::read_idx(again);
    if (b.dims != a.dims || b.data != a.data) fuzz::violated("IDX round trip changed the array");
  }
  return 0;
}
