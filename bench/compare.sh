#!/usr/bin/env bash
# Runs our benchmarks and LibTorch's one after the other on this machine and writes
# docs/benchmarks.md (tables of medians and ratios, SVG plots, machine and versions).
#   bash bench/compare.sh            # full comparison (a few minutes on 2 cores)
#   QUICK=1 bash bench/compare.sh    # fewer repetitions, for a smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# LibTorch must run on OpenBLAS (Debian's reference BLAS is ~40x slower): install and select it.
if ! dpkg -s libtorch-dev libopenblas0-openmp python3 >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libtorch-dev libopenblas0-openmp python3 >/dev/null
fi
bash bench/setup_openblas.sh
bash .ci/setup

threads=${CLARENA_BENCH_THREADS:-$(nproc)}
reps=5
[ -n "${QUICK:-}" ] && reps=1
build=build-bench
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCLARENA_NATIVE=ON -DCLARENA_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_step bench_kernels bench_libtorch
out="$build/results"
mkdir -p "$out"
common=(--benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true
        --benchmark_format=json --benchmark_min_time=0.2)
# The default model over every batch size, and the deep and wide ones at the middle sizes.
filter='default/|deep/.*/(1|128|512)/|wide/.*/(1|32|128)/'

echo "== ours: bench_step ($threads threads)"
CLARENA_NUM_THREADS=$threads "$build/bench/bench_step" "${common[@]}" \
  --benchmark_filter="cpu/($filter)" >"$out/ours_step.json"
echo "== ours: bench_kernels (GEMM at the step's shapes, streaming kernels)"
CLARENA_NUM_THREADS=$threads "$build/bench/bench_kernels" "${common[@]}" \
  --benchmark_filter='Gemm/(cpu|eigen)/|Stream/cpu' >"$out/ours_kernels.json"
echo "== LibTorch: bench_libtorch ($threads threads, OpenBLAS)"
CLARENA_BENCH_THREADS=$threads "$build/bench/libtorch/bench_libtorch" "${common[@]}" \
  --benchmark_filter="$filter" >"$out/libtorch_step.json"

python3 bench/report.py --ours "$out/ours_step.json" --kernels "$out/ours_kernels.json" \
  --libtorch "$out/libtorch_step.json" --out docs/benchmarks.md --plots docs
echo "wrote docs/benchmarks.md"
