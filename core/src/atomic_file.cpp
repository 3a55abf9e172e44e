#include "clarena/core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "clarena/core/errors.h"

namespace clarena {
namespace fs = std::filesystem;
namespace {

/// CLARENA_FAULT_AT, read once: which durable operation to fault, and how.
struct FaultPlan {
  long long at = 0;  // 0: never
  bool enospc = false;
};

FaultPlan read_fault_plan() {
  FaultPlan plan;
  const char* env = std::getenv("CLARENA_FAULT_AT");
  if (!env || !*env) return plan;
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(env, &end, 10);
  const std::string rest = end ? end : "";
  if (errno != 0 || end == env || n < 1 || (!rest.empty() && rest != ":enospc"))
    throw ValueError(std::string("CLARENA_FAULT_AT='") + env +
                     "': expected N or N:enospc with N >= 1 (the durable operation to fault)");
  plan.at = n;
  plan.enospc = rest == ":enospc";
  return plan;
}

std::atomic<long long> g_durable_ops{0};

/// Called just before each durable operation: returns the errno to fail it with (0: go on),
/// or kills the process, as CLARENA_FAULT_AT asks.
int fault_point() {
  static const FaultPlan plan = read_fault_plan();
  if (plan.at == 0) return 0;
  if (g_durable_ops.fetch_add(1) + 1 != plan.at) return 0;
  if (plan.enospc) return ENOSPC;
  std::raise(SIGKILL);
  std::_Exit(137);  // not reached
}

std::string cause(int err) {
  return std::strerror(err);
}

fs::path parent_of(const fs::path& p) {
  const fs::path parent = p.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

/// fsync of a folder; returns 0 or the errno (file systems that cannot sync a folder: 0).
int sync_dir(const fs::path& dir) {
  if (const int err = fault_point()) return err;
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  int err = 0;
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) err = errno;
  ::close(fd);
  return err;
}

int rename_step(const fs::path& from, const fs::path& to, unsigned flags = 0) {
  if (const int err = fault_point()) return err;
#ifdef RENAME_EXCHANGE
  if (flags != 0)
    return ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), flags) == 0 ? 0 : errno;
#else
  if (flags != 0) return EINVAL;
#endif
  return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
}

int remove_step(const fs::path& dir) {
  if (const int err = fault_point()) return err;
  std::error_code ec;
  fs::remove_all(dir, ec);
  return ec ? ec.value() : 0;
}

}  // namespace

uint64_t fnv1a64(std::string_view bytes, uint64_t hash) {
  for (unsigned char c : bytes)
    hash = (hash ^ c) * 0x100000001b3ull;
  return hash;
}

fs::path temp_path(const fs::path& file) {
  fs::path tmp = file;
  tmp += ".tmp";
  return tmp;
}

void write_file_atomic(const fs::path& file, std::string_view bytes) {
  const fs::path tmp = temp_path(file);
  size_t done = 0;
  int fd = -1;
  auto fail = [&](const std::string& step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());  // a failed write must not hold the disk space it took
    throw IOError("cannot write " + file.string() + ": " + step + " failed at byte offset " +
                  std::to_string(done) + " of " + std::to_string(bytes.size()) + ": " + cause(err));
  };

  if (const int err = fault_point()) fail("writing " + tmp.string(), err);
  ::unlink(tmp.c_str());  // a stale temporary, or a link planted there: never written through
  fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) fail("creating " + tmp.string(), errno);
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("writing " + tmp.string(), errno);
    if (n == 0) fail("writing " + tmp.string(), EIO);
    done += static_cast<size_t>(n);
  }
  if (const int err = fault_point()) fail("fsync of " + tmp.string(), err);
  if (::fsync(fd) != 0) fail("fsync of " + tmp.string(), errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) fail("closing " + tmp.string(), errno);
  if (const int err = rename_step(tmp, file)) fail("renaming " + tmp.string(), err);
  if (const int err = sync_dir(parent_of(file)))
    throw IOError("cannot write " + file.string() + ": fsync of its folder failed: " + cause(err));
}

fs::path old_dir_path(const fs::path& target) {
  fs::path old = target;
  old += ".old";
  return old;
}

fs::path recover_dir(const fs::path& target) {
  std::error_code ec;
  if (!fs::exists(target, ec) && fs::is_directory(old_dir_path(target), ec))
    return old_dir_path(target);
  return target;
}

void fsync_dir(const fs::path& dir) {
  if (const int err = sync_dir(dir))
    throw IOError("cannot fsync folder " + dir.string() + ": " + cause(err));
}

void replace_dir_atomic(const fs::path& staged, const fs::path& target) {
  auto fail = [&](const std::string& step, int err) {
    throw IOError("cannot replace folder " + target.string() + " by " + staged.string() + ": " +
                  step + ": " + cause(err));
  };
  const fs::path old = old_dir_path(target);
  std::error_code ec;
  const bool had_target = fs::exists(target, ec);
  int err = 0;
#ifdef RENAME_EXCHANGE
  if (had_target) {
    err = rename_step(staged, target, RENAME_EXCHANGE);  // staged now holds the previous one
    if (err == 0) {
      if ((err = sync_dir(parent_of(target)))) fail("fsync of the parent folder", err);
      if ((err = remove_step(staged))) fail("removing the previous folder", err);
      return;
    }
    if (err != EINVAL && err != ENOSYS && err != EOPNOTSUPP && err != ENOTSUP)
      fail("exchanging the folders", err);
  }
#endif
  // No atomic exchange here: park the previous folder, move the new one in, drop the old one.
  // Between the two renames recover_dir(target) finds the parked, complete previous folder.
  if (had_target) {
    if (fs::exists(old, ec) && (err = remove_step(old))) fail("removing " + old.string(), err);
    if ((err = rename_step(target, old))) fail("parking the previous folder", err);
  }
  if ((err = rename_step(staged, target))) fail("renaming the new folder into place", err);
  if ((err = sync_dir(parent_of(target)))) fail("fsync of the parent folder", err);
  if (fs::exists(old, ec) && (err = remove_step(old))) fail("removing " + old.string(), err);
}

}  // namespace clarena
