// libFuzzer harness: the continual-learning checkpoint state (state.json, read on resume by
// cl/src/results_io.cpp). The parameters next to it go through fuzz_params.
#include "fuzz_common.h"
#include "results_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace clarena;
  fuzz::write_file("state.json", fuzz::as_text(data, size));
  try {
    const cl::CheckpointState s = cl::read_checkpoint_state(fuzz::scratch_dir());
    if (s.tasks_done < 0 || s.tasks_done > s.config.num_tasks)
      fuzz::violated("checkpoint accepted with tasks_done outside [0, num_tasks]");
  } catch (const Error&) {
  }
  return 0;
}
