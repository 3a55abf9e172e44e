#!/usr/bin/env bash
# Prepares, on this (CPU) machine, what the GPU machine lacks for bench/gpu_check.sh, in the
# ignored folder .gpu-kit/ that the device tool carries along (`carry: [".gpu-kit"]`).
#
#   bench/gpu_kit.sh              # the Debian packages only (seconds)
#   bench/gpu_kit.sh --binaries   # also the GPU test and benchmark binaries, built here by the dry
#                                 # run for sm_90 with this machine's CUDA (minutes: nvcc)
#
# The GPU machine (docs/gpu.md) has CUDA 13.0, CMake, ninja and PyTorch but no Eigen, GoogleTest
# or Google Benchmark and no network. The kit holds:
#   debs/     libeigen3-dev, libgtest-dev, libgmock-dev (GTest's CMake package names gmock too),
#             libbenchmark-dev and libbenchmark1debian, fetched with `apt-get download` (or taken
#             from apt's cache when offline). gpu_check.sh unpacks them with `dpkg -x` into a
#             scratch folder, never into /, and points CMake at it.
#   bin/      with --binaries: test_cuda_kernels, test_cuda_training, bench_kernels, bench_step,
#             cuda_probe (stripped, portable: CLARENA_NATIVE=OFF), the fallback gpu_check.sh uses
#             when the build on the device fails; MANIFEST says from which commit and nvcc.
# The kit must stay small: the working tree and the kit travel together under 64 MiB.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT="$ROOT/.gpu-kit"
BINARIES=0
for arg in "$@"; do
  case "$arg" in
    --binaries) BINARIES=1 ;;
    -h | --help)
      sed -n '2,20p' "${BASH_SOURCE[0]}"
      exit 0
      ;;
    *)
      echo "gpu_kit.sh: unknown argument $arg" >&2
      exit 2
      ;;
  esac
done

PACKAGES=(libeigen3-dev libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian)
mkdir -p "$KIT/debs"
rm -f "$KIT"/debs/*.deb
(
  cd "$KIT/debs"
  if ! apt-get -q -o APT::Sandbox::User=root download "${PACKAGES[@]}" >/dev/null 2>apt.err; then
    echo "gpu_kit.sh: apt-get download failed ($(tail -n 1 apt.err)); trying apt's cache" >&2
    for p in "${PACKAGES[@]}"; do
      cp /var/cache/apt/archives/"${p}"_*.deb . 2>/dev/null || {
        echo "gpu_kit.sh: no .deb for $p (run 'apt-get update' first?)" >&2
        exit 1
      }
    done
  fi
  rm -f apt.err
)
for p in "${PACKAGES[@]}"; do
  ls "$KIT/debs/${p}"_*.deb >/dev/null 2>&1 || {
    echo "gpu_kit.sh: $p missing from $KIT/debs" >&2
    exit 1
  }
done
echo "debs: $(cd "$KIT/debs" && ls -- *.deb | tr '\n' ' ')"
# The device gets a copy of the tree without .git: say which commit the kit was made from.
{
  git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown
} | tr -d '\n' >"$KIT/COMMIT"
git -C "$ROOT" diff --quiet 2>/dev/null || echo -n "+changes" >>"$KIT/COMMIT"

if [ "$BINARIES" = 1 ]; then
  # The dry run builds exactly what the device builds (same options, from the kit) for sm_90.
  CHECK_OUT=$(mktemp -d)
  if ! OUT="$CHECK_OUT" bash "$ROOT/bench/gpu_check.sh" --dry-run --build-only; then
    echo "gpu_kit.sh: the dry-run build failed; see $CHECK_OUT/build.log" >&2
    exit 1
  fi
  BUILD="$ROOT/build-gpu-dry"
  rm -rf "${KIT:?}/bin"
  mkdir -p "$KIT/bin"
  for t in tests/test_cuda_kernels tests/test_cuda_training bench/bench_kernels bench/bench_step \
    bench/cuda_probe; do
    cp "$BUILD/$t" "$KIT/bin/"
    strip "$KIT/bin/$(basename "$t")"
  done
  {
    echo "commit $(git -C "$ROOT" rev-parse HEAD)$(git -C "$ROOT" diff --quiet || echo ' (with uncommitted changes)')"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m), CUDA_ARCHITECTURES=90, CLARENA_NATIVE=OFF"
    nvcc --version 2>/dev/null | tail -n 2 || /usr/local/cuda/bin/nvcc --version | tail -n 2
  } >"$KIT/bin/MANIFEST"
  rm -rf "$CHECK_OUT"
  echo "bin: $(ls "$KIT/bin" | tr '\n' ' ')"
fi

size_kib=$(du -sk "$KIT" | cut -f1)
echo "kit: $KIT, $((size_kib / 1024)) MiB"
if [ "$size_kib" -gt $((40 * 1024)) ]; then
  echo "gpu_kit.sh: the kit is over 40 MiB; it must travel with the tree under 64 MiB" >&2
  exit 1
fi
