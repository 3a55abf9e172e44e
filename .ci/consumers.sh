#!/usr/bin/env bash
# The installed package as outside programs use it: for a static and a shared build, install
# the library component into a prefix under build-consumers/, then build and run one small
# program per exported target (examples/consumers/{core,nn,cl}), each finding only the
# package, and examples/embed likewise. A consumer that fails to configure, link or compute the
# right result fails CI. Nearly all the time goes into compiling the library twice.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/build-consumers"
jobs="${JOBS:-$(nproc)}"
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
start=$SECONDS

for shared in OFF ON; do
  kind=$([ "$shared" = ON ] && echo shared || echo static)
  build="$root/$kind" prefix="$root/$kind/prefix"
  echo "=== $kind library ($((SECONDS - start)) s)"
  cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS="$shared" \
    -DCLARENA_NATIVE=OFF -DCLARENA_BUILD_TESTS=OFF -DCLARENA_BUILD_BENCH=OFF \
    -DCLARENA_BUILD_CL=ON -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
  # The libraries only (not the clarena command or the demo): what the `lib` component holds.
  cmake --build "$build" -j"$jobs" --target clarena_core clarena_nn clarena_cl
  rm -rf "$prefix"
  cmake --install "$build" --component lib >/dev/null
  for layer in core nn cl; do
    echo "=== $kind consumer of clarena::$layer ($((SECONDS - start)) s)"
    dir="$root/$kind/consumer-$layer"
    cmake -S "examples/consumers/$layer" -B "$dir" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
      >/dev/null
    cmake --build "$dir" -j"$jobs"
    "$dir/consumer_$layer"
  done
  echo "=== $kind: examples/embed ($((SECONDS - start)) s)"
  cmake -S examples/embed -B "$root/$kind/embed" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
  cmake --build "$root/$kind/embed" -j"$jobs"
  "$root/$kind/embed/embed"
done
echo "=== consumers: all passed ($((SECONDS - start)) s)"
