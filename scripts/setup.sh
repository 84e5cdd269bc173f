#!/usr/bin/env bash
# Installs tfm's build dependencies from Debian 12 packages (only what is
# missing), then configures and builds a Release tree in ./build.
#
#   scripts/setup.sh            # install + configure + build
#   BUILD_DIR=build-asan CMAKE_ARGS="-DTFM_SANITIZE=ON" scripts/setup.sh
#   EXTRA_PACKAGES="diatheke" scripts/setup.sh   # also install these
#
# Idempotent: packages already present are skipped and `apt-get update` runs
# only when something has to be installed. Works as root or through sudo.
set -euo pipefail

root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${BUILD_DIR:-$root_dir/build}
build_type=${BUILD_TYPE:-Release}

packages=(
  g++ make cmake pkg-config
  libdnnl-dev ocl-icd-opencl-dev opencl-c-headers   # oneDNN's CMake config needs OpenCL
  libhdf5-dev hdf5-tools
  libspdlog-dev libfmt-dev
  catch2
  libyaml-cpp-dev libcli11-dev libsentencepiece-dev nlohmann-json3-dev
  libopenmpi-dev openmpi-bin                          # data-parallel training (TFM_MPI); the MPI tests
)
# shellcheck disable=SC2206
packages+=(${EXTRA_PACKAGES:-})

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "tfm setup: installing ${missing[*]}"
  if [[ $(id -u) -eq 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "tfm setup: missing packages (${missing[*]}) and not root, and no sudo to install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -S "$root_dir" -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" ${CMAKE_ARGS:-}
cmake --build "$build_dir" -j "$(nproc)"
