#!/usr/bin/env bash
# Builds the libFuzzer harnesses with clang + ASan + UBSan and fuzzes each for N seconds.
#
#   tests/fuzz/run.sh [SECONDS_EACH] [HARNESS...]      (default: 60 s, all four)
#
# Each harness first replays its regression inputs (tests/fuzz/regressions/<name>), then
# fuzzes from its seed corpus (tests/fuzz/corpus/<name>; new inputs go to the build folder,
# never into the source tree). Exits non-zero when any harness finds a crash, a sanitizer
# report, a leak, a timeout (-timeout), an allocation over -malloc_limit_mb or an escaping
# non-clarena exception; the input is saved under $FUZZ_BUILD_DIR/artifacts/<name>/.
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_JOBS (build parallelism, 2),
# CXX (default clang++), FUZZ_TIMEOUT (seconds per input, 10), FUZZ_RSS_MB (2048),
# FUZZ_PARALLEL (harnesses fuzzed side by side, default: the number of cores),
# FUZZ_REUSE_BUILD=1 (FUZZ_BUILD_DIR is already configured with -DCLARENA_FUZZ=ON, e.g. CI's
# clang ASan build: build the harnesses there instead of configuring a new folder).
set -euo pipefail

seconds=${1:-60}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -eq 0 ] && harnesses=(idx params checkpoint config)

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-2}
cxx=${CXX:-clang++}
timeout=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_MB:-2048}

parallel=${FUZZ_PARALLEL:-$(nproc)}

if [ "${FUZZ_REUSE_BUILD:-0}" != 1 ]; then
  cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCLARENA_FUZZ=ON -DCLARENA_NATIVE=OFF -DCLARENA_BUILD_TESTS=OFF -DCLARENA_BUILD_BENCH=OFF \
    -DCLARENA_BUILD_CL=ON >"$build.configure.log" 2>&1 || { cat "$build.configure.log"; exit 1; }
fi
targets=()
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export CLARENA_NUM_THREADS=1  # one thread: reproducible, and no pool threads per input

# One harness: its regressions, then `seconds` of fuzzing. Prints its summary; the status says
# whether it found anything.
fuzz_one() {
  local h=$1 bin="$build/tests/fuzz/fuzz_$1" work="$build/corpus/$1" artifacts="$build/artifacts/$1/"
  mkdir -p "$work" "$artifacts"
  if ! "$bin" -runs=0 "$root/tests/fuzz/regressions/$h" >"$build/$h.regressions.log" 2>&1; then
    echo "=== fuzz_$h: a regression input fails"
    tail -40 "$build/$h.regressions.log"
    return 1
  fi
  if "$bin" -max_total_time="$seconds" -timeout="$timeout" -rss_limit_mb="$rss" \
      -malloc_limit_mb="$rss" -print_final_stats=1 -artifact_prefix="$artifacts" \
      "$work" "$root/tests/fuzz/corpus/$h" >"$build/$h.log" 2>&1; then
    echo "=== fuzz_$h: ${seconds}s from $(ls "$root/tests/fuzz/corpus/$h" | wc -l) seeds, no findings"
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$build/$h.log" || true
  else
    echo "=== fuzz_$h FAILED: input(s) in $artifacts, full log $build/$h.log"
    tail -60 "$build/$h.log"
    return 1
  fi
}

# Side by side, `parallel` at a time (each libFuzzer process uses one core).
failed=()
pending=("${harnesses[@]}")
while [ ${#pending[@]} -gt 0 ]; do
  batch=("${pending[@]:0:$parallel}")
  pending=("${pending[@]:$parallel}")
  pids=()
  for h in "${batch[@]}"; do
    fuzz_one "$h" >"$build/$h.summary" 2>&1 &
    pids+=($!)
  done
  for i in "${!batch[@]}"; do
    wait "${pids[$i]}" || failed+=("${batch[$i]}")
    cat "$build/${batch[$i]}.summary"
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}"
  exit 1
fi
echo "fuzz: no findings (${seconds}s each: ${harnesses[*]})"
