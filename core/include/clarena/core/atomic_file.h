// Durable, atomic files: the one way the library writes a file, and its one checksum.
//
// A kill, a power cut or a full disk at any instant leaves either the previous file (or folder)
// or the whole new one, never a mix, and every failure is reported (IOError naming the file).
//
// Fault injection, for tests: with CLARENA_FAULT_AT=N in the environment, the N-th durable
// operation of the process (each write, fsync and rename below, counted from 1) is replaced by
// a SIGKILL of the process; with CLARENA_FAULT_AT=N:enospc it fails as on a full disk instead.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

namespace clarena {

inline constexpr uint64_t kFnv1a64Offset = 0xcbf29ce484222325ull;

/// FNV-1a, 64 bit, over `bytes`; pass a previous result as `hash` to continue it.
uint64_t fnv1a64(std::string_view bytes, uint64_t hash = kFnv1a64Offset);

/// The temporary that write_file_atomic writes before renaming it: `file` + ".tmp".
std::filesystem::path temp_path(const std::filesystem::path& file);

/// Writes `bytes` to `file` atomically and durably: writes temp_path(file) in the same folder
/// (every write checked), fsyncs it, renames it over `file` and fsyncs the folder. On failure
/// the temporary is removed and IOError names the file, the step, the byte offset and the cause.
void write_file_atomic(const std::filesystem::path& file, std::string_view bytes);

/// Makes the folder `staged` (its files already durable, e.g. by write_file_atomic) take the
/// place of the folder `target` in one atomic step, fsyncs their parent, then removes the
/// previous `target`. Where the file system cannot exchange two folders atomically, the
/// previous folder is parked as old_dir_path(target) until the new one is in place: readers
/// then find a complete folder at recover_dir(target).
void replace_dir_atomic(const std::filesystem::path& staged, const std::filesystem::path& target);

/// Where replace_dir_atomic parks the previous folder when it cannot exchange: target + ".old".
std::filesystem::path old_dir_path(const std::filesystem::path& target);

/// The complete folder for `target`: `target` itself, or its parked previous version when a
/// replace_dir_atomic was interrupted between its two renames (read-only: moves nothing).
std::filesystem::path recover_dir(const std::filesystem::path& target);

/// fsync of a folder, so that the entries created or renamed in it survive a power cut.
void fsync_dir(const std::filesystem::path& dir);

}  // namespace clarena
