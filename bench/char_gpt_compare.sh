#!/usr/bin/env bash
# tfm vs PyTorch on the reference configuration (configs/char_gpt_small.yaml):
# the same model, file and hyperparameters trained by `tfm train` and by
# bench/char_gpt_torch.py, several seeds each; prints the final validation
# losses, their difference, and training tokens/s.
#
#   bench/char_gpt_compare.sh                      # 2000 steps, seeds 1337 1338 1339
#   bench/char_gpt_compare.sh --steps 100 --seeds 1337   # smoke run
#
# Options (or environment variables):
#   --steps N      (STEPS)    training steps (default: the config's 2000; the
#                             schedule length stays 2000, as in the config)
#   --seeds "..."  (SEEDS)    seeds for both sides (default "1337 1338 1339")
#   --out DIR      (OUT)      run directories and logs (default runs/char_gpt_compare)
#   --tfm PATH     (TFM)      tfm binary (default ./build/tfm)
#   --only tfm|torch          run one side only (the table reads what is in OUT)
#   LOAD_MAX (0.5), WAIT_MAX (900 s): before every run, wait until the 1-minute
#   load average is below LOAD_MAX and no compiler (cc1plus) is running, for at
#   most WAIT_MAX seconds over the whole script; then run anyway (flagged).
#
# Timings are only meaningful on an idle machine: each run records the
# 1-minute load average before it and the CPU time used by OTHER processes
# during it (from /proc/stat minus the run's own CPU time), shown as "other
# CPU" in cores. Losses do not depend on load.
set -euo pipefail
cd "$(dirname "$0")/.."

CONFIG=configs/char_gpt_small.yaml
STEPS=${STEPS:-}
SEEDS=${SEEDS:-"1337 1338 1339"}
OUT=${OUT:-runs/char_gpt_compare}
TFM=${TFM:-./build/tfm}
PY=${PY:-/usr/bin/python3}
LOAD_MAX=${LOAD_MAX:-0.5}
WAIT_MAX=${WAIT_MAX:-900}
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --steps) STEPS=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --tfm) TFM=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -x $TFM ]] || { echo "no tfm binary at $TFM (cmake --build build --target tfm)" >&2; exit 1; }
mkdir -p "$OUT"
WAITED=0

# Waits (within the WAIT_MAX budget) for an idle machine.
wait_idle() {
  while :; do
    local load; load=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load" -v m="$LOAD_MAX" 'BEGIN{exit !(l < m)}' && ! pgrep -x cc1plus >/dev/null; then
      return 0
    fi
    if (( WAITED >= WAIT_MAX )); then
      echo "  (machine still busy after ${WAITED}s of waiting: load $load; running anyway, timings suspect)" >&2
      return 0
    fi
    sleep 10; WAITED=$((WAITED + 10))
  done
}

busy_jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9}' /proc/stat; }

# run NAME CMD...: waits for idle, runs CMD (stdout+stderr to OUT/NAME.log) and
# writes OUT/NAME.load: "load_before other_cpu_cores wall_s".
run() {
  local name=$1; shift
  wait_idle
  local load0 j0 j1 t0 t1; load0=$(cut -d' ' -f1 /proc/loadavg)
  echo "== $name (load before: $load0)" >&2
  j0=$(busy_jiffies); t0=$(date +%s.%N)
  local TIMEFORMAT='%U %S'
  { time "$@" >"$OUT/$name.log" 2>&1; } 2>"$OUT/$name.cpu"
  t1=$(date +%s.%N); j1=$(busy_jiffies)
  read -r u s <"$OUT/$name.cpu"
  awk -v l="$load0" -v j="$((j1 - j0))" -v hz="$(getconf CLK_TCK)" -v u="$u" -v s="$s" -v t0="$t0" -v t1="$t1" \
    'BEGIN{w=t1-t0; o=(j/hz-u-s)/w; if(o<0)o=0; printf "%s %.2f %.1f\n", l, o, w}' >"$OUT/$name.load"
  tail -n 3 "$OUT/$name.log" >&2
}

step_args=()
torch_steps=()
if [[ -n $STEPS ]]; then step_args=(--set "train.max_steps=$STEPS" --set schedule.total_steps=2000); torch_steps=(--steps "$STEPS"); fi

for seed in $SEEDS; do
  if [[ $ONLY != torch ]]; then
    rm -rf "$OUT/tfm_s$seed"
    run "tfm_s$seed" env OMP_WAIT_POLICY=PASSIVE "$TFM" train "$CONFIG" --set "train.out_dir=$OUT/tfm_s$seed" \
      --set "train.seed=$seed" "${step_args[@]}"
  fi
  if [[ $ONLY != tfm ]]; then
    run "torch_s$seed" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
      GLIBC_TUNABLES=glibc.malloc.hugetlb=1 "$PY" bench/char_gpt_torch.py --seed "$seed" "${torch_steps[@]}" \
      --json "$OUT/torch_s$seed.json"
  fi
done

# ---- table
"$PY" - "$OUT" $SEEDS <<'EOF'
import json, math, os, statistics as st, sys
out, seeds = sys.argv[1], sys.argv[2:]

def load_info(name):
    p = os.path.join(out, name + ".load")
    if not os.path.exists(p): return None
    l, o, w = open(p).read().split()
    return float(l), float(o), float(w)

def tfm(seed):
    p = os.path.join(out, f"tfm_s{seed}", "metrics.jsonl")
    if not os.path.exists(p): return None
    rows = [json.loads(l) for l in open(p) if l.strip()]
    tps = [r["tokens_per_s"] for r in rows[1:]] or [rows[0]["tokens_per_s"]]
    return {"val": rows[-1]["val_loss"], "step": rows[-1]["step"], "tps": sum(tps) / len(tps),
            "evals": [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]}

def torch(seed):
    p = os.path.join(out, f"torch_s{seed}.json")
    if not os.path.exists(p): return None
    j = json.load(open(p))
    return {"val": j["final_val_loss"], "step": j["steps"], "tps": j["tokens_per_s"],
            "evals": [(e["step"], e["val_loss"]) for e in j["evals"]]}

def fmt_load(li):
    return f"{li[0]:.2f} / {li[1]:.2f}" if li else "-"

res = {"tfm": {s: tfm(s) for s in seeds}, "torch": {s: torch(s) for s in seeds}}
print()
print("per run (load = 1-min load average before the run / CPU cores used by other processes during it)")
print(f"| side  | seed | steps | final val loss | tokens/s | wall s | load before / other CPU |")
print(f"|-------|------|-------|----------------|----------|--------|-------------------------|")
for side in ("tfm", "torch"):
    for s in seeds:
        r = res[side][s]
        if r is None: continue
        li = load_info(f"{side}_s{s}")
        print(f"| {side:<5} | {s} | {r['step']:>5} | {r['val']:.4f}         | {r['tps']:>8.0f} | "
              f"{li[2] if li else float('nan'):>6.1f} | {fmt_load(li):<23} |")
print()
print("validation loss by step")
steps = sorted({st_ for side in res for r in res[side].values() if r for st_, _ in r["evals"]})
hdr = [f"{side} s{s}" for side in ("tfm", "torch") for s in seeds if res[side][s]]
print("| step | " + " | ".join(hdr) + " |")
print("|------|" + "|".join("-" * (len(h) + 2) for h in hdr) + "|")
for k in steps:
    cells = []
    for side in ("tfm", "torch"):
        for s in seeds:
            r = res[side][s]
            if not r: continue
            d = dict(r["evals"])
            cells.append(f"{d[k]:.4f}" if k in d else "-")
    print(f"| {k:>4} | " + " | ".join(c.ljust(len(h)) for c, h in zip(cells, hdr)) + " |")

def agg(side, key):
    v = [r[key] for r in res[side].values() if r]
    if not v: return float("nan"), float("nan"), 0
    return st.mean(v), (st.stdev(v) if len(v) > 1 else 0.0), len(v)

tv, tvs, tn = agg("tfm", "val"); pv, pvs, pn = agg("torch", "val")
tt, tts, _ = agg("tfm", "tps"); pt, pts, _ = agg("torch", "tps")
print()
print(f"summary (mean ± sample std over seeds; tfm n={tn}, torch n={pn})")
print("| metric | tfm | PyTorch | |difference| / ratio |")
print("|---|---|---|---|")
diff = abs(tv - pv)
print(f"| final val loss | {tv:.4f} ± {tvs:.4f} | {pv:.4f} ± {pvs:.4f} | {diff:.4f} "
      f"({'within' if diff <= 0.03 else 'NOT within'} 0.03) |")
print(f"| training tokens/s | {tt:.0f} ± {tts:.0f} | {pt:.0f} ± {pts:.0f} | tfm/torch = {tt / pt:.2f} |")
EOF
