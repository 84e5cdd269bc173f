#!/usr/bin/python3
"""PyTorch's naive attention timed like bench/bench_attention.cpp's naive column.

softmax(q·kᵀ/√d (+ causal -inf mask))·v forward + backward with the seed dO,
B = 1, H = 8, D = 64, fp32, T = 512 ... --max-t, best of a few runs after one
warm-up (as the C++ benchmark: on a shared machine other processes only add
time). PyTorch 1.13 has no fused CPU attention (scaled_dot_product_
attention arrived in 2.0), so this is the peer's attention as a 1.13 model
computes it. Rows whose [H, T, T] tensors would not fit in --naive-gb GB are
skipped, as in the C++ benchmark.

Run it as the peer is run here (2 threads, AVX-512 OpenBLAS kernels, passive
waits; Debian's python3-torch with libopenblas0-pthread installed, or torch
falls back to the reference BLAS and runs ~10x slower):
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_WAIT_POLICY=PASSIVE \
      GLIBC_TUNABLES=glibc.malloc.hugetlb=1 /usr/bin/python3 bench/attention_torch.py
The machine is shared: timings are indicative only.
"""
import argparse
import math
import time

import torch

HEADS, DIM = 8, 64


CLOCK = time.perf_counter


def run(q, k, v, dout, bias):
    for t in (q, k, v):
        t.grad = None
    t0 = CLOCK()
    s = torch.matmul(q * (1.0 / math.sqrt(DIM)), k.transpose(-2, -1))
    if bias is not None:
        s = s + bias
    o = torch.matmul(torch.softmax(s, dim=-1), v)
    o.backward(dout)
    return CLOCK() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-t", type=int, default=16384)
    ap.add_argument("--naive-gb", type=float, default=12.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true",
                    help="process CPU time instead of wall time (with --threads 1: a proxy for an idle machine)")
    args = ap.parse_args()
    if args.cpu_time:
        global CLOCK
        CLOCK = time.process_time
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    print(f"torch {torch.__version__} naive attention fwd+bwd, B = 1, H = {HEADS}, D = {DIM}, "
          f"{torch.get_num_threads()} threads; ms = best of up to {args.reps} runs after a warm-up "
          f"({'process CPU time' if args.cpu_time else 'wall time'})")
    print(f"{'T':>6} {'causal':>7} {'torch ms':>12}")
    t = 512
    while t <= args.max_t:
        for causal in (False, True):
            if 6.0 * 4.0 * HEADS * t * t > args.naive_gb * 1e9:
                print(f"{t:>6} {'yes' if causal else 'no':>7} {'-':>12}")
                continue
            q, k, v, dout = (torch.randn(1, HEADS, t, DIM) for _ in range(4))
            for x in (q, k, v):
                x.requires_grad_(True)
            bias = torch.full((t, t), float("-inf")).triu(1) if causal else None
            reps = max(1, args.reps * 2048 // max(t, 2048))
            run(q, k, v, dout, bias)
            best = min(run(q, k, v, dout, bias) for _ in range(reps))
            print(f"{t:>6} {'yes' if causal else 'no':>7} {1e3 * best:>12.1f}", flush=True)
        t *= 2


if __name__ == "__main__":
    main()
