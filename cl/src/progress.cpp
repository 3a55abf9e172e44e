#include "progress.h"

#include <cstdio>
#include <ostream>

namespace clarena::cl {

Progress::Progress(std::ostream* out, std::string algorithm, int num_tasks, int epochs, bool live)
    : out_(out),
      algorithm_(std::move(algorithm)),
      num_tasks_(num_tasks),
      epochs_(epochs),
      live_(live) {}

void Progress::step(int task, int epoch, int64_t step, int64_t steps, double loss,
                    double accuracy) {
  ++steps_done_;
  if (!out_ || !live_) return;
  const auto now = Clock::now();
  if (step != steps && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double rate = steps_done_ / std::max(elapsed, 1e-9);
  // Steps left: the rest of this epoch, the remaining epochs and tasks at the same size.
  const int64_t left =
      (steps - step) + steps * ((epochs_ - epoch) + int64_t(epochs_) * (num_tasks_ - task));
  char line[200];
  std::snprintf(line, sizeof(line),
                "\r[%s] task %d/%d epoch %d/%d step %lld/%lld loss %.4f acc %.3f %.0f steps/s "
                "left %.0fs   ",
                algorithm_.c_str(), task, num_tasks_, epoch, epochs_, static_cast<long long>(step),
                static_cast<long long>(steps), loss, accuracy, rate, left / std::max(rate, 1e-9));
  *out_ << line << std::flush;
}

void Progress::epoch_done(const EpochRecord& r) {
  if (!out_) return;
  char line[200];
  std::snprintf(line, sizeof(line),
                "%s[%s] task %d/%d epoch %d/%d train loss %.4f acc %.4f | val loss %.4f acc %.4f\n",
                live_ ? "\r" : "", algorithm_.c_str(), r.task, num_tasks_, r.epoch, epochs_,
                r.train_loss, r.train_accuracy, r.val_loss, r.val_accuracy);
  *out_ << line << std::flush;
}

void Progress::task_done(int task, const AccuracyMatrix& accuracy) {
  if (!out_) return;
  std::string row;
  char cell[32];
  for (int j = 1; j <= task; ++j) {
    std::snprintf(cell, sizeof(cell), " %.4f", accuracy.at(task, j));
    row += cell;
  }
  *out_ << "[" << algorithm_ << "] after task " << task << ", test accuracy:" << row << "\n";
}

}  // namespace clarena::cl
