#!/usr/bin/env bash
# Sets everything up (packages, configure, build) and runs the whole test
# suite through ctest. Exits non-zero when any test fails.
#
#   scripts/test.sh
#   BUILD_DIR=build-asan BUILD_TYPE=RelWithDebInfo CMAKE_ARGS="-DTFM_SANITIZE=ON" scripts/test.sh
set -euo pipefail
root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BUILD_DIR=${BUILD_DIR:-$root_dir/build}
"$root_dir/scripts/setup.sh"
cd "$BUILD_DIR"
ctest --output-on-failure -j "$(nproc)" ${CTEST_ARGS:-}
