#!/usr/bin/env bash
# Sets everything up and runs the main job: train the default
# character-level GPT on the KJV Bible (configs/char_gpt.yaml, about 8
# minutes on 2 cores) and print a sample from it.
#
# The corpus is extracted from Debian's Bible packages into data/cache/ on
# the first run. A finished run in runs/char_gpt is reused (delete it to
# train again); an interrupted one is resumed.
set -euo pipefail
root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export BUILD_DIR=${BUILD_DIR:-$root_dir/build}
EXTRA_PACKAGES="diatheke sword-text-kjv sword-text-web sword-text-sparv" "$root_dir/scripts/setup.sh"

cd "$root_dir"
tfm="$BUILD_DIR/tfm"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
[[ -f data/cache/kjv.txt ]] || "$tfm" prepare-data --cache data/cache

run_dir=runs/char_gpt
if [[ -f $run_dir/last.h5 ]]; then
  "$tfm" train --resume "$run_dir"
else
  "$tfm" train configs/char_gpt.yaml
fi
echo
echo "== sample from $run_dir (tfm sample $run_dir --prompt ...) =="
"$tfm" sample "$run_dir" --prompt "And God said" --tokens 600 --temperature 0.8 --top-k 40 --seed 1
