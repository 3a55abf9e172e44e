#!/usr/bin/env bash
# The installed package as outside programs use it: for a static and a shared build, install
# clarena (libraries, headers, package files and the clarena command) into a prefix under
# build-consumers/, then build and run, each finding only the package:
#   - one small program per exported target (examples/consumers/{core,nn,cl}) and examples/embed;
#   - the installed `clarena train` for a short run, and examples/on_device (clarena::nn and
#     clarena::core only) on that run's checkpoint: frozen backbone against the whole network.
# A consumer that fails to configure, link or compute the right result fails CI.
#
#   CONSUMERS_KINDS="static shared"  which builds (default both)
#   CONSUMERS_STATIC_BUILD=build     take the static kind from this existing build folder (its
#                                    libraries and clarena command) instead of compiling again
#   CONSUMERS_ROOT=DIR               where the builds go (default build-consumers/)
#   JOBS=N                           parallel jobs (default nproc)
# Nearly all the time goes into compiling the library.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${CONSUMERS_ROOT:-$PWD/build-consumers}"
jobs="${JOBS:-$(nproc)}"
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
start=$SECONDS
say() { echo "=== $1 ($((SECONDS - start)) s)"; }

for kind in ${CONSUMERS_KINDS:-static shared}; do
  prefix="$root/$kind/prefix"
  if [ "$kind" = static ] && [ -n "${CONSUMERS_STATIC_BUILD:-}" ]; then
    build="$CONSUMERS_STATIC_BUILD"
    say "static library: from $build"
    grep -q '^BUILD_SHARED_LIBS:BOOL=ON' "$build/CMakeCache.txt" &&
      { echo "$build is a shared build" >&2; exit 1; }
  else
    build="$root/$kind/build"
    shared=$([ "$kind" = shared ] && echo ON || echo OFF)
    say "$kind library"
    cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS="$shared" \
      -DCLARENA_NATIVE=OFF -DCLARENA_BUILD_TESTS=OFF -DCLARENA_BUILD_BENCH=OFF \
      -DCLARENA_BUILD_CL=ON >/dev/null
  fi
  # The libraries and the clarena command (not the demo, tests or benchmarks).
  cmake --build "$build" -j"$jobs" --target clarena_core clarena_nn clarena_cl clarena
  rm -rf "$prefix"
  cmake --install "$build" --prefix "$prefix" >/dev/null
  for example in consumers/core consumers/nn consumers/cl embed on_device; do
    say "$kind: examples/$example"
    dir="$root/$kind/${example//\//-}"
    cmake -S "examples/$example" -B "$dir" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
    cmake --build "$dir" -j"$jobs"
    case "$example" in
      consumers/*) "$dir/consumer_${example#consumers/}" ;;
      embed) "$dir/embed" ;;
      on_device)
        # A checkpoint from the installed command (which finds its libraries through $ORIGIN).
        run="$root/$kind/run"
        rm -rf "$run"
        "$prefix/bin/clarena" train algorithm=fix epochs=1 num_tasks=2 \
          max_train_samples_per_task=500 progress=false output_dir="$run" >/dev/null
        "$dir/on_device" "$run" --tasks 2 --steps 20
        # Bad input is an error message and a non-zero exit, not a crash.
        rc=0
        "$dir/on_device" "$run/config.yaml" 2>/dev/null || rc=$?
        [ "$rc" -eq 1 ] || { echo "on_device on a non-checkpoint: exit $rc, want 1" >&2; exit 1; }
        ;;
    esac
  done
done
say "consumers: all passed"
