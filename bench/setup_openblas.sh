#!/usr/bin/env bash
# Select Debian's OpenBLAS (openmp variant) as the system libblas.so.3 / liblapack.so.3.
#
# Debian's LibTorch (libtorch-dev) calls whatever libblas.so.3 update-alternatives selects; the
# reference BLAS is ~40x slower, so bench_libtorch must run on OpenBLAS. Idempotent.
# Needs the package libopenblas0-openmp (apt-get install -y libopenblas0-openmp).
set -euo pipefail

SUDO=""
if [[ "$(id -u)" -ne 0 ]]; then
  SUDO="sudo"
fi

select_openblas() {
  local name="$1"
  local target
  target="$(update-alternatives --list "${name}" 2>/dev/null | grep '/openblas-openmp/' | head -n 1 || true)"
  if [[ -z "${target}" ]]; then
    echo "error: no openblas-openmp candidate for ${name}; install libopenblas0-openmp" >&2
    return 1
  fi
  # Always --set (idempotent): it also moves the group to manual mode, so installing another BLAS
  # with a higher priority later does not silently switch it.
  ${SUDO} update-alternatives --set "${name}" "${target}"
}

arch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
select_openblas "libblas.so.3-${arch}"
select_openblas "liblapack.so.3-${arch}"

echo "libblas.so.3   -> $(readlink -f "/usr/lib/${arch}/libblas.so.3")"
echo "liblapack.so.3 -> $(readlink -f "/usr/lib/${arch}/liblapack.so.3")"
