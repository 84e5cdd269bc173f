#!/usr/bin/python3
"""Helper of bench/train_throughput (not meant to be run by hand).

  train_throughput_report.py run PREFIX -- CMD...
      runs CMD (stdout and stderr to PREFIX.log) and writes PREFIX.run.json:
      exit code, wall seconds, max RSS of CMD and its children (getrusage,
      the same measurement for tfm and PyTorch), the 1-minute load average
      before, and the CPU cores used by OTHER processes during the run
      (/proc/stat busy time minus CMD's own CPU time, over the wall time).
  train_throughput_report.py report OUT --workloads a,b --warmup W --steps S
      reads OUT/<workload>/{tfm,torch}_r<k>* and OUT/<workload>/gemm_r<k>.log
      and prints the tables.

Timing, the same on both sides: a step's wall time is measured from the end
of the previous step's bookkeeping to the end of its optimizer step (tfm:
metrics.jsonl window_s with train.log_every = 1; PyTorch: perf_counter around
the step), so it includes data loading and excludes evaluation (none runs),
logging and checkpoints. Steps 1..W are warm-up; tokens/s = tokens of steps
W+1..W+S / their summed wall time; ms/step = median over those steps.
"""
import json
import os
import re
import resource
import statistics as st
import subprocess
import sys
import time


def cpu_seconds():
    """(busy, steal) CPU seconds of the whole machine so far; busy includes steal
    (time the hypervisor gave to other guests while this one wanted to run)."""
    with open("/proc/stat") as f:
        v = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in v[:8])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / hz, steal / hz


def cmd_run(prefix, cmd):
    load = float(open("/proc/loadavg").read().split()[0])
    (b0, s0), t0 = cpu_seconds(), time.perf_counter()
    with open(prefix + ".log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    b1, s1 = cpu_seconds()
    other = max(0.0, (b1 - b0 - ru.ru_utime - ru.ru_stime) / wall) if wall > 0 else 0.0
    with open(prefix + ".run.json", "w") as f:
        json.dump({"rc": rc, "wall_s": wall, "max_rss_bytes": ru.ru_maxrss * 1024, "load_before": load,
                   "other_cpu_cores": other, "steal_s": s1 - s0, "cmd": cmd}, f)
    return rc


# ----------------------------------------------------------------- reading runs

def fmt_steal(info):
    """Seconds the hypervisor stole during the run ("-" for runs recorded before it was kept)."""
    return f"{info['steal_s']:.1f}" if "steal_s" in info else "-"


def read_json(path):
    with open(path) as f:
        return json.load(f)


def tfm_run(prefix):
    """Per-step times, tokens, losses, memory and the model line of a tfm run directory."""
    rows = [json.loads(line) for line in open(os.path.join(prefix, "metrics.jsonl")) if line.strip()]
    if any("window_s" not in r for r in rows):
        raise SystemExit(f"{prefix}/metrics.jsonl has no window_s: a tfm build older than bench/train_throughput")
    rows.sort(key=lambda r: r["step"])
    steps = [r["step"] for r in rows]
    if steps != list(range(1, len(rows) + 1)):
        raise SystemExit(f"{prefix}: metrics rows are not one per step (train.log_every must be 1)")
    log = open(os.path.join(prefix, "train.log")).read()
    m = re.search(r"vocabulary (\d+).*?(\d+) parameters", log)
    return {"step_s": [r["window_s"] for r in rows], "step_tokens": [r["window_tokens"] for r in rows],
            "first_loss": rows[0]["train_loss"], "params": int(m.group(2)) if m else None,
            "vocab": int(m.group(1)) if m else None,
            "peak_tensor_bytes": max(r["peak_mem_bytes"] for r in rows),
            "reserved_bytes": max(r["reserved_mem_bytes"] for r in rows)}


def gemm_peak(path, shape):
    """The fastest fp32 GEMM at `shape` in a bench_matmul log: the best of
    oneDNN called directly (its OpenMP threads) and tfm's matmul (one
    single-threaded oneDNN part per thread of tfm's team), so that neither
    way of threading flatters the fraction."""
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0] == shape:
            try:
                return max(float(f[1]), float(f[2]), float(f[4]))
            except ValueError:
                pass
    return None


# ----------------------------------------------------------------- model FLOPs

GPT = {  # what the driver trains (configs/char_gpt_small.yaml, configs/gpt_medium.yaml)
    "small": dict(n_layers=4, d=128, d_ff=512, block=64, batch=12),
    "medium": dict(n_layers=6, d=384, d_ff=1536, block=256, batch=16),
}
TRANSLATE = dict(d=256, d_ff=1024, enc_layers=3, dec_layers=3, block=128, batch_tokens=4096, seed=1)


def gpt_step_flops(w, vocab):
    """6·(matmul weights)·tokens + 12·L·d·T·tokens (PaLM / nanoGPT, attention over the full T×T)."""
    g = GPT[w]
    tokens = g["batch"] * g["block"]
    n_mm = g["n_layers"] * (4 * g["d"] ** 2 + 2 * g["d"] * g["d_ff"]) + vocab * g["d"]
    return 6 * n_mm * tokens + 12 * g["n_layers"] * g["d"] * g["block"] * tokens


def translation_sequence(tokenizer_ckpt, n_steps):
    """(src tokens, tgt tokens, FLOPs) of tfm's first n_steps batches."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tfm_translation_data as tdata
    t = TRANSLATE
    p = tdata.Pipeline("data/cache/en_es.train.tsv", tokenizer_ckpt, t["block"], t["batch_tokens"], t["seed"])
    out = []
    for _ in range(n_steps):
        idx = p.batcher.next()
        n_src = sum(len(p.examples[i][0]) for i in idx)
        n_tgt = sum(len(p.examples[i][1]) + 1 for i in idx)
        out.append((n_src, n_tgt, tdata.batch_flops(p.examples, idx, t["d"], t["d_ff"], p.vocab, t["enc_layers"],
                                                    t["dec_layers"])))
    return out, p.vocab


# ----------------------------------------------------------------- report

def fmt_mb(b):
    return f"{b / 1e6:.0f}" if b else "-"


def cmd_report(out, workloads, warmup, steps_by_w):
    shapes = {"small": "768x128x512", "medium": "4096x384x1536", "translate": "4096x256x1024"}
    summary = []
    for w in workloads:
        wd = os.path.join(out, w)
        if not os.path.isdir(wd):
            continue
        steps = steps_by_w[w]
        lo, hi = warmup, warmup + steps
        runs = {"tfm": [], "torch": []}
        for name in sorted(os.listdir(wd)):
            m = re.fullmatch(r"(tfm|torch)_r(\d+)\.run\.json", name)
            if m:
                runs[m.group(1)].append(int(m.group(2)))
        seq = None
        tok_ckpt = next((os.path.join(wd, f"tfm_r{k}", "last.h5") for k in sorted(runs["tfm"])
                         if os.path.exists(os.path.join(wd, f"tfm_r{k}", "last.h5"))), None)
        if w == "translate":
            tok_ckpt = os.environ.get("TOKENIZER_FROM") or tok_ckpt
            if tok_ckpt:
                seq, _ = translation_sequence(tok_ckpt, hi)
        peaks = [gemm_peak(os.path.join(wd, f), shapes[w]) for f in sorted(os.listdir(wd)) if f.startswith("gemm_r")]
        peaks = [p for p in peaks if p]
        peak = st.median(peaks) if peaks else None
        print(f"\n== {w}: steps {lo + 1}..{hi} timed after {lo} warm-up steps; "
              f"GEMM peak (fp32 at {shapes[w]}, best of raw oneDNN and tfm's matmul, median of {len(peaks)} measurements in this run): "
              f"{f'{peak:.0f} GFLOP/s' if peak else '-'}")
        print("| side | round | ms/step (median) | tokens/s | model GFLOP/s | of GEMM peak | first loss | params | "
              "peak tensor MB | max RSS MB | load before / other CPU / steal s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        agg = {}
        for side in ("tfm", "torch"):
            for k in sorted(runs[side]):
                prefix = os.path.join(wd, f"{side}_r{k}")
                info = read_json(prefix + ".run.json")
                if info["rc"] != 0:
                    print(f"| {side} | {k} | FAILED (exit {info['rc']}, see {prefix}.log) |||||||||")
                    continue
                r = tfm_run(prefix) if side == "tfm" else read_json(prefix + ".json")
                if len(r["step_s"]) < hi:
                    print(f"| {side} | {k} | only {len(r['step_s'])} steps, need {hi} |||||||||")
                    continue
                t = r["step_s"][lo:hi]
                if w == "translate":
                    if seq is None:
                        print(f"| {side} | {k} | no tokenizer checkpoint to replay the batches |||||||||")
                        continue
                    tgt_seen = r["step_tokens"] if side == "tfm" else r["step_tgt_tokens"]
                    same = [s[1] for s in seq] == list(tgt_seen[:hi])
                    tokens = sum(s[0] + s[1] for s in seq[lo:hi])
                    flops = sum(s[2] for s in seq[lo:hi])
                else:
                    same = True
                    tokens = sum(r["step_tokens"][lo:hi])
                    flops = gpt_step_flops(w, r["vocab"]) * steps
                tps, gfs = tokens / sum(t), flops / sum(t) / 1e9
                ms = st.median(t) * 1e3
                rss = info["max_rss_bytes"]
                peak_t = r.get("peak_tensor_bytes")
                agg.setdefault(side, []).append((tps, gfs, ms, r["first_loss"], r["params"], peak_t, rss, same))
                print(f"| {side} | {k} | {ms:.1f} | {tps:.0f} | {gfs:.1f} | "
                      f"{f'{gfs / peak:.0%}' if peak else '-'} | {r['first_loss']:.4f} | {r['params']} | "
                      f"{fmt_mb(peak_t)} | {fmt_mb(rss)} | {info['load_before']:.2f} / {info['other_cpu_cores']:.2f} / {fmt_steal(info)} |"
                      + ("" if same else " BATCHES DIFFER FROM tfm's |"))
        summary.append((w, agg, peak))
    print("\n== summary (median over rounds; tokens/s range in brackets)")
    print("| workload | tfm tokens/s | PyTorch tokens/s | tfm/PyTorch | tfm GFLOP/s (of peak) | "
          "PyTorch GFLOP/s (of peak) | tfm ms/step | PyTorch ms/step | params tfm / PyTorch | "
          "first loss tfm / PyTorch | tfm peak tensor / max RSS MB | PyTorch max RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w, agg, peak in summary:
        def col(side, i):
            v = [a[i] for a in agg.get(side, [])]
            return v
        def tps(side):
            v = col(side, 0)
            return f"{st.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]" if v else "-"
        def gf(side):
            v = col(side, 1)
            if not v:
                return "-"
            return f"{st.median(v):.1f}" + (f" ({st.median(v) / peak:.0%})" if peak else "")
        def med(side, i, f):
            v = [x for x in col(side, i) if x is not None]
            return f.format(st.median(v)) if v else "-"
        ratio = (f"{st.median(col('tfm', 0)) / st.median(col('torch', 0)):.2f}x"
                 if col("tfm", 0) and col("torch", 0) else "-")
        params = f"{med('tfm', 4, '{:.0f}')} / {med('torch', 4, '{:.0f}')}"
        if col("tfm", 4) and col("torch", 4) and col("tfm", 4)[0] != col("torch", 4)[0]:
            params += " DIFFER"
        same = all(a[7] for s in agg.values() for a in s)
        print(f"| {w} | {tps('tfm')} | {tps('torch')} | {ratio} | {gf('tfm')} | {gf('torch')} | "
              f"{med('tfm', 2, '{:.1f}')} | {med('torch', 2, '{:.1f}')} | {params} | "
              f"{med('tfm', 3, '{:.3f}')} / {med('torch', 3, '{:.3f}')} | "
              f"{fmt_mb(st.median(col('tfm', 5))) if col('tfm', 5) else '-'} / "
              f"{fmt_mb(st.median(col('tfm', 6))) if col('tfm', 6) else '-'} | "
              f"{fmt_mb(st.median(col('torch', 6))) if col('torch', 6) else '-'} |"
              + ("" if same else " batches differ |"))
    print("\ntokens: small/medium = batch x block per step; translate = source + target tokens per step, "
          "non-padding, target = target pieces + EOS (the decoder outputs), the same batches on both sides.")
    print("model FLOPs: 6 x (weights of matmuls, the tied output projection included) x tokens they touch "
          "+ 12 x d x (query length) x (key length) per attention and layer (full rectangle, no causal halving); "
          "translate counts real (non-pad) tokens per sentence (tfm_translation_data.batch_flops).")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "run" and sys.argv[3] == "--":
        return cmd_run(sys.argv[2], sys.argv[4:])
    if len(sys.argv) >= 3 and sys.argv[1] == "report":
        import argparse
        ap = argparse.ArgumentParser()
        ap.add_argument("out")
        ap.add_argument("--workloads", required=True)
        ap.add_argument("--warmup", type=int, required=True)
        ap.add_argument("--steps", required=True, help="w=N,w=N")
        a = ap.parse_args(sys.argv[2:])
        steps = {k: int(v) for k, v in (x.split("=") for x in a.steps.split(","))}
        cmd_report(a.out, a.workloads.split(","), a.warmup, steps)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
