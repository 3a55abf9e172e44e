#include "thread_pool.h"

#include <chrono>
#include <cstdlib>
#include <string>

#include "clarena/base/errors.h"
#include "clarena/kernels/backend.h"

namespace clarena::kernels {
namespace {
constexpr auto kPollBeforeSleep = std::chrono::microseconds(200);
// A job is one word: generation (32 bits) | task count (16) | next unclaimed task (16).
uint32_t generation_of(uint64_t state) {
  return static_cast<uint32_t>(state >> 32);
}
int count_of(uint64_t state) {
  return static_cast<int>((state >> 16) & 0xffff);
}
int index_of(uint64_t state) {
  return static_cast<int>(state & 0xffff);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int default_threads() {
  for (const char* name : {"CLARENA_NUM_THREADS", "OMP_NUM_THREADS"})
    if (const char* value = std::getenv(name)) {
      const int n = std::atoi(value);
      if (n > 0) return std::min(n, 1024);
    }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(hw) : 1;
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  start_workers(threads);
}

ThreadPool::~ThreadPool() {
  stop_workers();
}

void ThreadPool::start_workers(int threads) {
  stop_ = false;
  const uint32_t seen = generation_of(state_.load());
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this, seen] { work(seen); });
  threads_.store(std::max(threads, 1), std::memory_order_relaxed);
}

void ThreadPool::stop_workers() {
  {
    std::lock_guard lock(sleep_mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_)
    w.join();
  workers_.clear();
}

void ThreadPool::resize(int threads) {
  if (threads < 1)
    throw ValueError("thread count must be at least 1, got " + std::to_string(threads));
  std::lock_guard job(job_mutex_);
  if (threads == size()) return;
  stop_workers();
  start_workers(threads);
}

void ThreadPool::drain(uint32_t generation) {
  uint64_t s = state_.load(std::memory_order_acquire);
  while (generation_of(s) == generation && index_of(s) < count_of(s)) {
    // Read after seeing the job's state: a successful claim below proves the job is still
    // open, so its caller has not yet published the next task.
    const auto* task = task_.load(std::memory_order_acquire);
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
    (*task)(index_of(s));
    finished_.fetch_add(1, std::memory_order_release);
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run(int n, const std::function<void(int)>& task) {
  auto run_inline = [&] {
    for (int i = 0; i < n; ++i)
      task(i);
  };
  if (n <= 1) return run_inline();
  // Busy (another user thread's job, or a task of ours calling back in): run on this thread.
  std::unique_lock job(job_mutex_, std::try_to_lock);
  if (!job.owns_lock() || workers_.empty() || n > kMaxTasks) return run_inline();
  const uint32_t generation = generation_of(state_.load()) + 1;
  task_.store(&task, std::memory_order_release);
  finished_.store(0, std::memory_order_release);
  state_.store(static_cast<uint64_t>(generation) << 32 | static_cast<uint64_t>(n) << 16,
               std::memory_order_release);
  {
    std::lock_guard lock(sleep_mutex_);
  }  // a worker about to sleep sees the new state or the notify
  wake_.notify_all();
  drain(generation);
  while (finished_.load(std::memory_order_acquire) < n)
    std::this_thread::yield();
}

void ThreadPool::work(uint32_t seen) {
  for (;;) {
    const auto poll_until = std::chrono::steady_clock::now() + kPollBeforeSleep;
    auto fresh = [&] { return generation_of(state_.load(std::memory_order_acquire)) != seen; };
    // Poll with a pause instruction and read the clock rarely: a tight loop of clock reads
    // would take execution resources from the thread doing the work on a sibling hyperthread.
    for (int spins = 0; !fresh() && !stop_; ++spins) {
      cpu_relax();
      if (spins % 256 == 0 && std::chrono::steady_clock::now() >= poll_until) break;
    }
    if (!fresh() && !stop_) {
      std::unique_lock lock(sleep_mutex_);
      wake_.wait(lock, [&] { return stop_ || fresh(); });
    }
    if (stop_) return;
    seen = generation_of(state_.load(std::memory_order_acquire));
    drain(seen);
  }
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

int cpu_num_threads() {
  return ThreadPool::global().size();
}
void set_cpu_num_threads(int n) {
  ThreadPool::global().resize(n);
}

}  // namespace clarena::kernels
