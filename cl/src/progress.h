// The progress display: a live line on a terminal, one plain line per epoch otherwise.
#pragma once

#include <chrono>
#include <iosfwd>
#include <string>

#include "clarena/cl/experiment.h"

namespace clarena::cl {

class Progress {
 public:
  Progress(std::ostream* out, std::string algorithm, int num_tasks, int epochs, bool live);
  void step(int task, int epoch, int64_t step, int64_t steps, double loss, double accuracy);
  void epoch_done(const EpochRecord& record);
  void task_done(int task, const AccuracyMatrix& accuracy);

 private:
  using Clock = std::chrono::steady_clock;
  std::ostream* out_;
  std::string algorithm_;
  int num_tasks_, epochs_;
  bool live_;
  Clock::time_point start_ = Clock::now(), last_draw_{};
  int64_t steps_done_ = 0;
};

}  // namespace clarena::cl
