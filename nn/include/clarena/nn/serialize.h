// Parameter files: a module's parameters and buffers by name in one binary file.
//
// Layout (little-endian): magic "CLRNPARM", u32 version, u32 count, then per tensor:
// u32 name length, name, u8 dtype, u32 rank, i64 dims[rank], raw data; then a u64 FNV-1a
// checksum of everything before it. Written with write_file_atomic (core/atomic_file.h).
#pragma once

#include <filesystem>

#include "clarena/nn/module.h"

namespace clarena::nn {

void save(const Module& module, const std::filesystem::path& file);
/// Reads the whole file and checks it against the module (same names, dtypes and shapes)
/// before touching any parameter: on any error the module is left as it was (IOError).
void load(Module& module, const std::filesystem::path& file);

/// The same format for a plain list of named tensors (checkpoints use it).
void save_tensors(const NamedTensors& tensors, const std::filesystem::path& file);
NamedTensors load_tensors(const std::filesystem::path& file);

}  // namespace clarena::nn
