#!/usr/bin/env bash
# Which PyTorch 1.13 options make the bench/train_throughput peers fastest:
# runs each variant of a workload's peer for WARMUP + STEPS steps, variants
# alternated (A B C A B C ...) ROUNDS times, and prints the median ms/step
# of each variant (median over rounds of the per-run median over the timed
# steps) with the load average. bench/train_throughput uses the winner.
#
#   bench/torch_peer_options.sh small|medium|translate [ROUNDS] [STEPS] [WARMUP]
#
# translate needs a tfm checkpoint for the tokenizer: TOKENIZER_FROM=path/last.h5
# (default: runs/train_throughput/translate/tfm_r1/last.h5).
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:?usage: $0 small|medium|translate [ROUNDS] [STEPS] [WARMUP]}
ROUNDS=${2:-3}
STEPS=${3:-40}
WARMUP=${4:-5}
OUT=${OUT:-runs/torch_peer_options/$W}
PY=/usr/bin/python3
ENV=(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
     GLIBC_TUNABLES=glibc.malloc.hugetlb=1)
total=$((WARMUP + STEPS))
case $W in
  small) base=("$PY" bench/char_gpt_torch.py --eval-every 0 --steps "$total")
         names=(foreach+add foreach+fill plain+add foreach+add+avx512)
         opts=("--foreach --attn-mask add" "--foreach --attn-mask fill" "--attn-mask add" "--foreach --attn-mask add") ;;
  medium) base=("$PY" bench/char_gpt_torch.py --n-layers 6 --n-heads 6 --d-model 384 --block-size 256 --batch-size 16
                --dropout 0.2 --total-steps 5000 --eval-every 0 --steps "$total")
          names=(foreach+add foreach+fill foreach+add+avx512)
          opts=("--foreach --attn-mask add" "--foreach --attn-mask fill" "--foreach --attn-mask add") ;;
  translate) tok=${TOKENIZER_FROM:-runs/train_throughput/translate/tfm_r1/last.h5}
             [[ -f $tok ]] || { echo "no tokenizer checkpoint $tok (set TOKENIZER_FROM)" >&2; exit 1; }
             base=("$PY" bench/translate_torch.py --tokenizer-from "$tok" --steps "$total")
             names=(foreach+float foreach+bool plain+float foreach+float+avx512)
             opts=("--foreach --causal float" "--foreach --causal bool" "--causal float" "--foreach --causal float") ;;
  *) echo "unknown workload $W" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
for ((r = 1; r <= ROUNDS; ++r)); do
  for i in "${!names[@]}"; do
    n=${names[$i]}
    extra=()
    [[ $n == *avx512 ]] && extra=(ATEN_CPU_CAPABILITY=avx512)
    echo "== round $r $n (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    # shellcheck disable=SC2086
    "${ENV[@]}" "${extra[@]}" "${base[@]}" ${opts[$i]} --json "$OUT/${n}_r$r.json" >"$OUT/${n}_r$r.log" 2>&1
  done
done
"$PY" - "$OUT" "$WARMUP" "${names[@]}" <<'EOF'
import json, statistics as st, sys, glob, os
out, warm, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(f"| variant | median ms/step per round | median |")
print("|---|---|---|")
for n in names:
    per = [st.median(json.load(open(p))["step_s"][warm:]) * 1e3 for p in sorted(glob.glob(os.path.join(out, f"{n}_r*.json")))]
    print(f"| {n} | {', '.join(f'{x:.1f}' for x in per)} | {st.median(per):.1f} |")
EOF
