// The CPU backend's persistent thread pool. After a job, workers poll for the next one for a
// short while (a training step issues kernels back to back, and waking a sleeping thread costs
// tens of microseconds), then sleep on a condition variable, so an idle or oversubscribed
// machine does not burn cores. The calling thread takes a share of each job.
//
// One job at a time: a caller that finds the pool busy (another user thread's job, or a task
// of the running job calling back into the backend) runs its tasks itself, in order. Work is
// always cut into the same tasks whoever runs them (see parallel_tiles), so where a task runs
// never changes its result.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace clarena::kernels {

class ThreadPool {
 public:
  /// `threads` counts the caller: 1 means no worker at all.
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_.load(std::memory_order_relaxed); }
  /// Waits for the running job, then replaces the workers (threads >= 1).
  void resize(int threads);
  /// Runs task(0) .. task(n-1), spread over the workers and the caller, or all on the caller
  /// when the pool is busy; returns when all are done. Tasks must not throw.
  void run(int n, const std::function<void(int)>& task);

  /// The pool the CPU backend uses: CLARENA_NUM_THREADS threads, else OMP_NUM_THREADS, else
  /// one per hardware thread.
  static ThreadPool& global();
  /// Jobs of more tasks run on the caller (the job word holds 16-bit task indices).
  static constexpr int kMaxTasks = 0xffff;

 private:
  void start_workers(int threads);
  void stop_workers();
  void work(uint32_t seen);
  /// Claims and runs tasks of job `generation` until none is left.
  void drain(uint32_t generation);

  std::mutex job_mutex_;  // held by the caller whose job the workers run
  std::vector<std::thread> workers_;
  std::atomic<int> threads_{1};
  // A job is published in one word (generation, task count, next unclaimed task), so that a
  // worker can only claim a task of the job whose function pointer it read.
  std::atomic<uint64_t> state_{0};
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> finished_{0};
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
};

/// Runs fn(lo, hi) over [0, n) cut into tiles of `tile` elements (the last one shorter), in
/// parallel when there is more than one. `tile` must depend on the problem's shape only.
template <typename Fn>
void parallel_tiles(int64_t n, int64_t tile, Fn&& fn) {
  if (n <= 0) return;
  // At most 4096 tiles, so that any size fits a job; still a function of the shape alone.
  tile = std::max({tile, int64_t(1), (n + 4095) / 4096});
  const int64_t tiles = (n + tile - 1) / tile;
  if (tiles == 1) return fn(int64_t(0), n);
  ThreadPool::global().run(static_cast<int>(tiles), [&](int i) {
    const int64_t lo = static_cast<int64_t>(i) * tile;
    fn(lo, std::min(n, lo + tile));
  });
}

}  // namespace clarena::kernels
