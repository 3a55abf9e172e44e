// The CPU backend's thread count, as torch.get_num_threads / set_num_threads.
//
// Threading contract (also in kernels/include/clarena/kernels/backend.h and the README):
// - ops may be called from several user threads at once; each thread's ops run correctly. The
//   CPU backend has one worker pool: a call that finds it busy runs its tiles on the calling
//   thread instead of waiting.
// - results do not depend on the thread count: work is split into tiles sized by the shape,
//   never by the number of threads, and every tile is reduced in a fixed order, so the same
//   seed gives the same bits at 1, 2, 3 or 64 threads on the same machine type.
#pragma once

namespace clarena {

/// Threads the CPU backend spreads a kernel over, the calling thread included. Defaults to
/// CLARENA_NUM_THREADS, else OMP_NUM_THREADS, else one per hardware thread.
int num_threads();
/// Resizes the CPU backend's pool (n >= 1, else ValueError). Safe between ops; results are
/// bitwise the same at any count.
void set_num_threads(int n);

}  // namespace clarena
