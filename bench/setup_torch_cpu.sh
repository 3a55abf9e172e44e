#!/bin/bash
# Installs PyTorch's pip wheel (MKL + oneDNN) into /tmp/torch-cpu for the CPU reference
# (bench/torch_cpu_step.py) and writes /tmp/torch-cpu/run, which runs python with it.
# The PyPI wheel is the CUDA build: its CPU path needs none of the GPU libraries, but the loader
# needs them present. This fetches the few it links by name (nccl, cusparseLt, nvshmem) and
# stands a stub in for libcufile (GPU-direct storage, never called on the CPU path). For
# measurement only: nothing of this enters the project.
set -euo pipefail
root=/tmp/torch-cpu
if [ ! -x "$root/run" ]; then
  python3 -m venv "$root/venv"
  "$root/venv/bin/pip" install -q torch --no-deps
  "$root/venv/bin/pip" install -q filelock typing_extensions sympy networkx jinja2 fsspec numpy
  req() { grep -i "^Requires-Dist: $1" "$root"/venv/lib/python3*/site-packages/torch-*.dist-info/METADATA | sed 's/Requires-Dist: //; s/;.*//'; }
  "$root/venv/bin/pip" install -q --no-deps "$(req nvidia-nccl)" "$(req nvidia-cusparselt)" "$(req nvidia-nvshmem)"
  mkdir -p "$root/stub"
  lib=$(ls -d "$root"/venv/lib/python3*/site-packages/torch/lib)
  nm -D --undefined-only "$lib"/*.so | awk '{print $2}' | grep '^cuFile' | sort -u |
    sed 's/.*/int &(void) { return 5030; }/' > "$root/stub/cufile.c"
  gcc -shared -fPIC -Wl,-soname,libcufile.so.0 -o "$root/stub/libcufile.so.0" "$root/stub/cufile.c"
  cat > "$root/run" <<RUN
#!/bin/bash
export LD_LIBRARY_PATH=$root/stub:\$(ls -d $root/venv/lib/python3*/site-packages/nvidia/*/lib | tr '\n' ':')
exec $root/venv/bin/python "\$@"
RUN
  chmod +x "$root/run"
fi
"$root/run" -c "import torch; print('torch', torch.__version__, 'MKL', torch.backends.mkl.is_available())"
