#include "thread_pool.h"

#include <chrono>
#include <cstdlib>

namespace clarena::kernels {
namespace {
constexpr auto kPollBeforeSleep = std::chrono::microseconds(200);
uint32_t generation_of(uint64_t state) {
  return static_cast<uint32_t>(state >> 32);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; ++i)
    workers_.emplace_back([this] { work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_)
    w.join();
}

void ThreadPool::drain(uint32_t generation) {
  const auto* task = task_.load(std::memory_order_acquire);
  const int count = count_.load(std::memory_order_acquire);
  uint64_t s = state_.load(std::memory_order_acquire);
  while (generation_of(s) == generation && static_cast<int>(s & 0xffffffffu) < count) {
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
    (*task)(static_cast<int>(s & 0xffffffffu));
    finished_.fetch_add(1, std::memory_order_release);
    s = state_.load(std::memory_order_acquire);
  }
}

void ThreadPool::run(int n, const std::function<void(int)>& task) {
  if (workers_.empty() || n <= 1) {
    for (int i = 0; i < n; ++i)
      task(i);
    return;
  }
  const uint32_t generation = generation_of(state_.load()) + 1;
  task_.store(&task, std::memory_order_release);
  count_.store(n, std::memory_order_release);
  finished_.store(0, std::memory_order_release);
  state_.store(static_cast<uint64_t>(generation) << 32, std::memory_order_release);
  { std::lock_guard lock(mutex_); }  // a worker about to sleep sees the new state or the notify
  wake_.notify_all();
  drain(generation);
  while (finished_.load(std::memory_order_acquire) < n)
    std::this_thread::yield();
}

void ThreadPool::work() {
  uint32_t seen = 0;
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
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || fresh(); });
    }
    if (stop_) return;
    seen = generation_of(state_.load(std::memory_order_acquire));
    drain(seen);
  }
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    for (const char* name : {"CLARENA_NUM_THREADS", "OMP_NUM_THREADS"})
      if (const char* value = std::getenv(name)) {
        const int n = std::atoi(value);
        if (n > 0) return n;
      }
    const unsigned hw = std::thread::hardware_concurrency();
    return hw ? static_cast<int>(hw) : 1;
  }());
  return pool;
}

}  // namespace clarena::kernels
