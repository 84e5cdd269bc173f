#!/usr/bin/env bash
# Sets everything up and runs the main job.
#
# The main job will be: train the default character-level GPT
# (configs/char_gpt.yaml) and print a sample from it. The trainer does not
# exist yet (see README, "Status"), so for now this builds everything and
# runs the matmul benchmark as a smoke test of the build.
set -euo pipefail
root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BUILD_DIR=${BUILD_DIR:-$root_dir/build}
"$root_dir/scripts/setup.sh"
echo "tfm: build ready in $BUILD_DIR. The trainer (tfm train) is not implemented yet;"
echo "tfm: running the matmul benchmark instead (bench/bench_matmul --quick)."
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} "$BUILD_DIR/bench/bench_matmul" --quick
