#!/usr/bin/env bash
# The toy translator end to end: trains configs/translate_en_es.yaml from
# scratch, prints its curve (step, minutes since start, train loss,
# validation loss, validation BLEU with greedy decoding) and then the test
# BLEU of the final checkpoint with beam 4 and greedy decoding.
#
#   bench/translate_en_es.sh                 # the full config (~30 min on 2 cores)
#   bench/translate_en_es.sh --set train.max_steps=200   # shorter; any --set works
#
# Environment: OUT (run directory, default runs/translate_en_es_bench; an
# existing one is replaced), TFM (binary, default ./build/tfm).
# Needs data/cache/en_es.*.tsv (`build/tfm prepare-data`) and /usr/bin/python3
# for the table. Time figures are only meaningful on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/translate_en_es_bench}
TFM=${TFM:-./build/tfm}
[[ -x $TFM ]] || { echo "no tfm binary at $TFM (cmake --build build --target tfm)" >&2; exit 1; }
[[ -f data/cache/en_es.train.tsv ]] || { echo "no data/cache/en_es.train.tsv: run '$TFM prepare-data' first" >&2; exit 1; }

rm -rf "$OUT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
SECONDS=0
"$TFM" train configs/translate_en_es.yaml --set "train.out_dir=$OUT" "$@" >"$OUT.log" 2>&1 ||
  { tail -5 "$OUT.log" >&2; exit 1; }
echo "tfm train: $((SECONDS / 60)) min $((SECONDS % 60)) s wall time, including tokenizer training (log: $OUT.log)"

/usr/bin/python3 - "$OUT/metrics.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'step':>6} {'minutes':>8} {'train loss':>10} {'val loss':>9} {'val BLEU':>9} {'tok/s':>7} {'rss MB':>7}")
for r in rows:
    if "val_loss" not in r:
        continue
    bleu = f"{r['val_bleu']:9.2f}" if "val_bleu" in r else f"{'':9}"
    print(f"{r['step']:>6} {r['elapsed_s'] / 60:8.1f} {r['train_loss']:10.4f} {r['val_loss']:9.4f} {bleu}"
          f" {r['tokens_per_s']:7.0f} {r.get('rss_bytes', 0) / 1e6:7.0f}")
EOF

for beam in 4 1; do
  echo "test, beam $beam: $("$TFM" eval "$OUT/last.h5" --split test --beam "$beam" | grep '^BLEU')"
done
