#!/usr/bin/env bash
# Installs what cocolm needs to build and test, idempotently: Debian packages (via apt-get) and a
# few PyPI packages for the interoperability tests and golden-file generation. Says what it installs.
# Needs root (or sudo). Fails with a clear message when the CUDA toolkit is absent.
set -euo pipefail

CUDA_ROOT="${CUDAToolkit_ROOT:-${CUDA_HOME:-/usr/local/cuda}}"
if [[ ! -x "$CUDA_ROOT/bin/nvcc" || ! -f "$CUDA_ROOT/include/cuda_runtime.h" ]]; then
  echo "setup: the CUDA toolkit was not found at $CUDA_ROOT (need bin/nvcc and include/cuda_runtime.h)." >&2
  echo "setup: install CUDA 12.x/13.x there, or point CUDAToolkit_ROOT at it." >&2
  exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "setup: run as root or install sudo (apt-get is needed for missing packages)" >&2; exit 1
  fi
fi

debian_packages=(cmake make g++ pkg-config python3 python3-pip googletest libgtest-dev nlohmann-json3-dev libopenblas-dev
  libopenmpi-dev openmpi-bin  # OpenMPI: multi-process data parallelism and its tests (engine/dist)
  clang libclang-rt-14-dev)  # clang++ and its libFuzzer runtime: scripts/fuzz.sh
missing=()
for p in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: Debian packages present (${debian_packages[*]})"
fi

# pip into the system Python, which Debian marks externally managed (PEP 668) unless told otherwise.
pip_install() {
  python3 -m pip install -q "$@" 2>/dev/null || python3 -m pip install -q --break-system-packages "$@"
}

# PyPI packages used by the interop tests (safetensors reference), the golden-file scripts and `coco plot`
# (matplotlib; from PyPI rather than Debian so that it is built against the PyPI numpy above).
python_packages=(numpy safetensors tokenizers matplotlib)
py_missing=()
for p in "${python_packages[@]}"; do
  python3 -c "import $p" 2>/dev/null || py_missing+=("$p")
done
if ((${#py_missing[@]})); then
  echo "setup: installing PyPI packages: ${py_missing[*]}"
  pip_install "${py_missing[@]}"
else
  echo "setup: PyPI packages present (${python_packages[*]})"
fi
# torch + transformers for the Hugging Face interop tests (tests/interop/test_hf_*.cpp: coco export loaded
# by transformers, coco import of transformers-made checkpoints). PyPI has no CPU-only torch for Linux
# x86_64: this is the CUDA build (about 3 GB of wheels with its nvidia-* dependencies; it runs on the CPU
# here). Measured on the 2-core development machine: 103 s for a cold install, 5.6 GB on disk. Pinned to
# the versions the tests were written against.
hf_packages=("torch==2.15.0" "transformers==5.24.0")
hf_missing=()
for spec in "${hf_packages[@]}"; do
  have=$(python3 -c "import importlib.metadata as m; print(m.version('${spec%%==*}'))" 2>/dev/null || true)
  [[ "$have" == "${spec#*==}" ]] || hf_missing+=("$spec")
done
if ((${#hf_missing[@]})); then
  echo "setup: installing PyPI packages for the interop tests: ${hf_missing[*]} (torch pulls about 3 GB)"
  pip_install "${hf_missing[@]}"
else
  echo "setup: PyPI packages present (${hf_packages[*]})"
fi
# The cuDNN frontend (NVIDIA, header-only C++ graph API): coco-bench's cuDNN attention baseline and the
# compile check in scripts/cu_check.sh use its include/ directory. --no-deps: its Python-side
# dependencies (CUTLASS DSL, TVM FFI) are not needed for the headers. Optional: without it the gpu
# build leaves the cuDNN baseline out, so a failed install only warns.
cudnn_frontend="nvidia-cudnn-frontend==1.32.0"
installed=$(python3 -c "import importlib.metadata as m; print(m.version('nvidia-cudnn-frontend'))" 2>/dev/null || true)
if [[ "$installed" == "${cudnn_frontend#*==}" ]]; then
  echo "setup: PyPI package $cudnn_frontend present"
else
  echo "setup: installing PyPI package $cudnn_frontend (headers only, --no-deps)"
  python3 -m pip install -q --no-deps "$cudnn_frontend" 2>/dev/null ||
    python3 -m pip install -q --no-deps --break-system-packages "$cudnn_frontend" ||
    echo "setup: warning: could not install $cudnn_frontend; coco-bench will be built without the cuDNN attention baseline" >&2
fi
# cuobjdump and nvdisasm (NVIDIA, PyPI nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm, installed into the
# same nvidia/cu13/bin): scripts/cu_check.sh reads the SASS of the kernels (128-bit global loads,
# tensor-core instructions) and their __launch_bounds__ with them; `cuobjdump -sass` runs nvdisasm
# from its own folder and fails without it. The toolkit in /usr/local/cuda ships without either.
# Optional: without them cu_check.sh leaves those columns out.
for sass_package in "nvidia-cuda-cuobjdump==13.5.37" "nvidia-cuda-nvdisasm==13.5.37"; do
  installed=$(python3 -c "import importlib.metadata as m; print(m.version('${sass_package%==*}'))" 2>/dev/null || true)
  if [[ "$installed" == "${sass_package#*==}" ]]; then
    echo "setup: PyPI package $sass_package present"
  else
    echo "setup: installing PyPI package $sass_package"
    python3 -m pip install -q "$sass_package" 2>/dev/null ||
      python3 -m pip install -q --break-system-packages "$sass_package" ||
      echo "setup: warning: could not install $sass_package; scripts/cu_check.sh will print no SASS figures" >&2
  fi
done
echo "setup: CUDA toolkit $("$CUDA_ROOT/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') at $CUDA_ROOT"
