// A small persistent thread pool for the CPU backend's GEMM. After a job, workers poll for the
// next one for a short while (a training step issues GEMMs back to back, and waking a
// sleeping thread costs tens of microseconds), then sleep on a condition variable, so an idle
// or oversubscribed machine does not burn cores. The calling thread takes a share of each job.
#pragma once

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

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  /// Runs task(0) .. task(n-1), spread over the workers and the caller; returns when all are
  /// done. Tasks must not throw. One job at a time (the CPU backend is single-caller).
  void run(int n, const std::function<void(int)>& task);

  /// The pool the CPU backend uses: CLARENA_NUM_THREADS threads, else OMP_NUM_THREADS, else
  /// one per hardware thread.
  static ThreadPool& global();

 private:
  void work();
  /// Claims and runs tasks of job `generation` until none is left.
  void drain(uint32_t generation);

  std::vector<std::thread> workers_;
  // A job is published as (generation << 32 | next unclaimed index) in one word, so that a
  // worker can only claim a task of the job whose function pointer it read.
  std::atomic<uint64_t> state_{0};
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> count_{0}, finished_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<bool> stop_{false};
};

}  // namespace clarena::kernels
