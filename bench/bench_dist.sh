#!/usr/bin/env bash
# Data-parallel step time on this machine: the main-job GPT (configs/char_gpt.yaml:
# 6 layers, 192 dims, context 128, global batch 16) with 1 rank x 2 threads
# against 2 ranks x 1 thread (same global batch, same results), alternated
# A B A B ... ROUNDS times; prints the median step time, tokens/s and, for 2
# ranks, the per-step time spent waiting for gradient sums after backward
# (communication not hidden behind computation). Timings on a busy machine
# are not final: re-time on an idle one.
#
#   bench/bench_dist.sh                 # 3 rounds of 30 steps each
#   ROUNDS=5 STEPS=40 bench/bench_dist.sh
#   BUCKET_MB=1 bench/bench_dist.sh     # smaller gradient buckets
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tfm=${TFM:-$root/build/tfm}
data=${DATA:-$root/data/cache/kjv.txt}
rounds=${ROUNDS:-3}
steps=${STEPS:-30}
bucket=${BUCKET_MB:-25}
mpiexec=${MPIEXEC:-mpiexec}
[[ -x $tfm ]] || { echo "bench_dist: $tfm not built" >&2; exit 1; }
[[ -f $data ]] || { echo "bench_dist: $data missing (run: $tfm prepare-data)" >&2; exit 1; }
command -v "$mpiexec" >/dev/null || { echo "bench_dist: no $mpiexec (install openmpi-bin)" >&2; exit 1; }
flags=()
"$mpiexec" --version 2>&1 | grep -qE "Open MPI|OpenRTE" && flags=(--oversubscribe --allow-run-as-root --bind-to none)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

common=(--set data.path="$data" --set train.max_steps="$steps" --set schedule.total_steps=2000 --set train.log_every=5 --set train.eval_every=0
        --set train.checkpoint_every=0 --set train.keep_last=0 --set train.allreduce_bucket_mb="$bucket")

# Median over rows after the first (warm-up) of a metrics.jsonl field.
median() {
  python3 - "$1" "$2" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()][1:]
vals = [r[sys.argv[2]] for r in rows if sys.argv[2] in r]
print(f"{statistics.median(vals):.6g}" if vals else "nan")
PY
}

run() {  # $1 = label, $2 = ranks, $3 = threads, $4 = round
  local dir=$work/$1_$4
  if [[ $2 == 1 ]]; then
    OMP_NUM_THREADS=$3 "$tfm" train "$root/configs/char_gpt.yaml" "${common[@]}" --set train.threads="$3" \
      --set train.out_dir="$dir" >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
  else
    OMP_NUM_THREADS=$3 "$mpiexec" "${flags[@]}" -np "$2" "$tfm" train "$root/configs/char_gpt.yaml" "${common[@]}" \
      --set train.threads="$3" --set train.out_dir="$dir" >"$dir.log" 2>&1 || { cat "$dir.log" >&2; exit 1; }
  fi
  local tps; tps=$(median "$dir/metrics.jsonl" tokens_per_s)
  local comm; comm=$(median "$dir/metrics.jsonl" comm_wait_s)
  echo "$1 round $4: $(python3 -c "print(f'{16*128/$tps*1000:.1f}')") ms/step, $tps tokens/s, comm wait $comm s/step" >&2
  echo "$1 $tps $comm" >> "$work/results"
}

echo "bench_dist: $rounds rounds x $steps steps, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((i = 1; i <= rounds; ++i)); do
  run "1x2" 1 2 "$i"
  run "2x1" 2 1 "$i"
done
python3 - "$work/results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for label in ("1x2", "2x1"):
    tps = [float(r[1]) for r in rows if r[0] == label]
    comm = [float(r[2]) for r in rows if r[0] == label and r[2] != "nan"]
    m = statistics.median(tps)
    line = f"{label} (ranks x threads): median {16*128/m*1000:.1f} ms/step, {m:.0f} tokens/s over {len(tps)} rounds"
    if comm:
        line += f", non-overlapped communication {statistics.median(comm)*1000:.2f} ms/step"
    print(line)
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg) (busy machine: not final)"
