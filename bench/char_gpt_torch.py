#!/usr/bin/python3
"""PyTorch reference for configs/char_gpt_small.yaml (nanoGPT style).

The same model, data handling, optimizer and schedule as `tfm train
configs/char_gpt_small.yaml`, written directly in PyTorch, so that the two
final validation losses can be compared (bench/char_gpt_compare.sh).

What is matched exactly (see layers/, optim/, data/, train/trainer.cpp):
  model      pre-norm GPT: token + learned position embeddings, n_layers x
             [x + attn(LN(x)), x + ffn(LN(x))], final LN, tied lm_head
             (logits = x @ tok_emb^T, no bias); fused qkv Linear(d, 3d),
             causal softmax attention with scale 1/sqrt(head_dim); FFN
             Linear(d, 4d) -> GELU (erf) -> Linear(4d, d); all Linears and
             LNs with bias; LayerNorm eps 1e-5; dropout (--dropout, as
             model.dropout) where tfm has it: after the embedding sum, on
             the attention probabilities and on both residual branches.
  init       GPT-2: every parameter with dim >= 2 ~ N(0, 0.02), except
             out_proj.weight and ffn.down.weight ~ N(0, 0.02/sqrt(2*n_layers));
             biases 0, LN weights 1.
  data       the file read as UTF-8; split at int(len * (1 - 0.1)) code
             points; vocabulary = sorted unique code points of the training
             split, id 0 = unknown, ids 1.. in code-point order.  Training
             batches: B random windows of block+1 tokens (start uniform in
             [0, len - block)).  Validation: the SAME evenly spaced windows as
             tfm's LMStream::fixed (start = (i*2654435761 + i//7) % (len -
             block), i = k*B + b), mean loss over eval_steps batches.
  optim      AdamW(betas, eps), weight decay on dim >= 2 params (embeddings
             included), 0 on vectors; lr_at(step) for step = 1..: linear
             warmup from 0, then cosine to min_lr; clip grad norm 1.0.

The training windows come from a different RNG than tfm's, so the runs are
not bit-identical; run several seeds to see the seed-to-seed spread.

Speed (bench/train_throughput runs this with --eval-every 0 --json and reads
the per-step wall times): the timed region of a step is the same as tfm's
(lr update, batch sampling, forward, loss.item(), zero_grad, backward,
clipping, optimizer step). Options tried for PyTorch 1.13 on 2 threads
(--fast picks the fastest, README "Benchmarks"): AdamW(foreach=True)
(multi-tensor; 1.13 has no fused AdamW on CPU), zero_grad(set_to_none=True),
the causal mask as a precomputed additive -inf bias (--attn-mask add) or
masked_fill (fill), autograd anomaly detection off, no profiler hooks.
bench/torch_peer_options.sh small (3 alternating rounds, 60 steps, on a
machine with load 12-14, so only indicative), median ms/step:
foreach+add 122.7, foreach+fill 158.4, no foreach+add 184.8,
foreach+add with ATEN_CPU_CAPABILITY=avx512 188.5; medium (6 layers, 384
dims, block 256; 2 rounds of 5 steps at load 15-17): foreach+add 14403,
foreach+fill 11453 (faster in both rounds), foreach+add+avx512 13041.
bench/train_throughput uses --foreach with --attn-mask add for the small
model and fill for the medium one (the two forms give the same loss and
gradients to 5e-8). Flushing denormals would be faster
still but changes the arithmetic and tfm does not do it, so it is left off.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------- model

class Attention(nn.Module):
    def __init__(self, d, n_heads, dropout=0.0):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d // n_heads
        self.qkv_proj = nn.Linear(d, 3 * d, bias=True)
        self.out_proj = nn.Linear(d, d, bias=True)
        self.attn_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, mask):
        B, T, D = x.shape
        q, k, v = self.qkv_proj(x).split(D, dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        if mask.dtype == torch.bool:  # masked_fill of the upper triangle
            att = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # [B, H, T, T]
            att = att.masked_fill(mask[:T, :T], float("-inf"))
        else:  # additive bias (0 / -inf), fused into the scores by baddbmm
            qf = q.reshape(B * self.n_heads, T, self.head_dim)
            kf = k.reshape(B * self.n_heads, T, self.head_dim)
            att = torch.baddbmm(mask[:T, :T].expand(B * self.n_heads, T, T), qf, kf.transpose(1, 2),
                                alpha=1.0 / math.sqrt(self.head_dim)).view(B, self.n_heads, T, T)
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        return self.out_proj(y)


class FeedForward(nn.Module):
    def __init__(self, d, d_ff):
        super().__init__()
        self.up = nn.Linear(d, d_ff, bias=True)
        self.down = nn.Linear(d_ff, d, bias=True)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))  # exact (erf) GELU


class Block(nn.Module):
    def __init__(self, d, n_heads, d_ff, eps, dropout=0.0):
        super().__init__()
        self.self_attn = Attention(d, n_heads, dropout)
        self.attn_norm = nn.LayerNorm(d, eps=eps)
        self.ffn = FeedForward(d, d_ff)
        self.ffn_norm = nn.LayerNorm(d, eps=eps)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, mask):
        x = x + self.drop(self.self_attn(self.attn_norm(x), mask))
        return x + self.drop(self.ffn(self.ffn_norm(x)))


class GPT(nn.Module):
    def __init__(self, vocab, block, n_layers, n_heads, d, d_ff=0, eps=1e-5, dropout=0.0, attn_mask="fill"):
        super().__init__()
        d_ff = d_ff or 4 * d
        self.block = block
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(block, d)
        self.emb_drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.layers = nn.ModuleList([Block(d, n_heads, d_ff, eps, dropout) for _ in range(n_layers)])
        self.final_norm = nn.LayerNorm(d, eps=eps)
        upper = torch.triu(torch.ones(block, block, dtype=torch.bool), diagonal=1)
        mask = upper if attn_mask == "fill" else torch.zeros(block, block).masked_fill(upper, float("-inf"))
        self.register_buffer("mask", mask, persistent=False)
        # GPT-2 init, as tfm's layers::init_gpt2 (+ constructor defaults for vectors).
        resid_std = 0.02 / math.sqrt(2.0 * n_layers)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                residual = name.endswith("out_proj.weight") or name.endswith("ffn.down.weight")
                nn.init.normal_(p, 0.0, resid_std if residual else 0.02)
            elif name.endswith("norm.weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)

    def forward(self, ids):
        T = ids.shape[1]
        x = self.emb_drop(self.tok_emb(ids) + self.pos_emb.weight[:T])
        for layer in self.layers:
            x = layer(x, self.mask)
        x = self.final_norm(x)
        return x @ self.tok_emb.weight.t()  # tied lm_head, no bias

    def loss(self, ids, targets):
        logits = self.forward(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ----------------------------------------------------------------- data

def load_data(path, valid_fraction):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")  # bytes -> code points, no newline translation
    split = int(len(text) * (1.0 - valid_fraction))
    train_text, valid_text = text[:split], text[split:]
    symbols = sorted(set(train_text))
    stoi = {c: i + 1 for i, c in enumerate(symbols)}  # 0 = unknown
    enc = lambda s: torch.tensor([stoi.get(c, 0) for c in s], dtype=torch.long)
    return enc(train_text), enc(valid_text), len(symbols) + 1, len(train_text), len(valid_text)


def random_batch(data, block, batch, gen):
    starts = torch.randint(0, data.numel() - block, (batch,), generator=gen)
    idx = starts[:, None] + torch.arange(block + 1)[None, :]
    w = data[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def fixed_batch(data, block, k, batch):
    """tfm's LMStream::fixed: evenly spaced windows, the same every time."""
    rng = data.numel() - block
    starts = []
    for b in range(batch):
        i = k * batch + b
        starts.append(((i * 2654435761 + i // 7) % (1 << 64)) % rng)
    idx = torch.tensor(starts)[:, None] + torch.arange(block + 1)[None, :]
    w = data[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


# ----------------------------------------------------------------- schedule

def lr_at(step, lr, min_lr, warmup, total):
    t = max(step, 1)
    if step <= warmup:
        return lr * t / warmup
    if step >= total:
        return min_lr
    progress = (t - warmup) / (total - warmup)
    return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------- cross-check

def eval_tfm_checkpoint(path, model, data_path, valid_fraction, evaluate):
    """Same weights, same windows: this model's validation loss must equal tfm's."""
    import h5py
    with h5py.File(path, "r") as f:
        tfm_symbols = bytes(f["tokenizer"][()]).decode("utf-8")
        with open(data_path, "rb") as d:
            text = d.read().decode("utf-8")
        ours = "".join(sorted(set(text[:int(len(text) * (1.0 - valid_fraction))])))
        print(f"tokenizer: tfm {len(tfm_symbols)} symbols, ours {len(ours)}: "
              f"{'identical' if tfm_symbols == ours else 'DIFFERENT'}")
        params = {n.removeprefix("decoder."): torch.from_numpy(f["params"][n][()]) for n in f["params"]}
        mine = dict(model.named_parameters())
        assert set(params) == set(mine), f"parameter names differ: {set(params) ^ set(mine)}"
        with torch.no_grad():
            for n, p in mine.items():
                assert p.shape == params[n].shape, f"{n}: {tuple(p.shape)} vs {tuple(params[n].shape)}"
                p.copy_(params[n])
        meta = dict(f.attrs)
    best = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in meta.items() if k.startswith("best")}
    print(f"checkpoint {path}: step {int(meta['step'])}, tfm {best}")
    print(f"PyTorch validation loss with these weights: {evaluate():.6f}")
    return 0


# ----------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/cache/kjv.txt")
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--n-layers", type=int, default=4)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--total-steps", type=int, default=2000, help="schedule length (schedule.total_steps)")
    ap.add_argument("--steps", type=int, default=None, help="steps to train (default: --total-steps)")
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.99)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--skip-steps", type=int, default=20, help="steps excluded from the tokens/s figure")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--foreach", action="store_true", help="AdamW(foreach=True) (multi-tensor update)")
    ap.add_argument("--dropout", type=float, default=0.0, help="model.dropout")
    ap.add_argument("--attn-mask", choices=("fill", "add"), default="fill",
                    help="causal mask by masked_fill (fill) or as an additive bias fused by baddbmm (add)")
    ap.add_argument("--json", default=None, help="also write the summary as JSON to this file")
    ap.add_argument("--eval-tfm-checkpoint", default=None, metavar="H5",
                    help="cross-check instead of training: load a tfm checkpoint's parameters and tokenizer "
                         "(needs h5py), print this model's validation loss with them, and exit")
    a = ap.parse_args()
    steps = a.steps if a.steps is not None else a.total_steps

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    t_start = time.perf_counter()

    train, valid, vocab, n_train, n_valid = load_data(a.data, a.valid_fraction)
    model = GPT(vocab, a.block_size, a.n_layers, a.n_heads, a.d_model, dropout=a.dropout, attn_mask=a.attn_mask)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps, foreach=a.foreach or None)
    gen = torch.Generator().manual_seed(a.seed + 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"data: {a.data} ({n_train} train / {n_valid} valid characters, vocabulary {vocab}), "
          f"model: {n_params} parameters, seed {a.seed}")

    @torch.no_grad()
    def evaluate():
        model.eval()
        tot = 0.0
        for k in range(a.eval_steps):
            x, y = fixed_batch(valid, a.block_size, k, a.batch_size)
            tot += model.loss(x, y).item()
        model.train()
        return tot / a.eval_steps

    if a.eval_tfm_checkpoint:
        return eval_tfm_checkpoint(a.eval_tfm_checkpoint, model, a.data, a.valid_fraction, evaluate)

    evals = []
    step_s, first_loss = [], None
    timed_s, timed_tokens = 0.0, 0
    window_loss, window_n = 0.0, 0
    t_train0 = time.perf_counter()
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        lr = lr_at(step, a.lr, a.min_lr, a.warmup, a.total_steps)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = random_batch(train, a.block_size, a.batch_size, gen)
        loss = model.loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        lv = loss.item()
        dt = time.perf_counter() - t0
        step_s.append(dt)
        if first_loss is None:
            first_loss = lv
        if step > a.skip_steps:
            timed_s += dt
            timed_tokens += a.batch_size * a.block_size
        window_loss += lv
        window_n += 1
        if not math.isfinite(lv):
            print(f"step {step}: non-finite loss {lv}", file=sys.stderr)
            return 3
        if a.eval_every > 0 and (step % a.eval_every == 0 or step == steps):
            val = evaluate()
            evals.append({"step": step, "val_loss": val})
            tps = timed_tokens / timed_s if timed_s > 0 else float("nan")
            print(f"step {step:>6}/{steps} | loss {window_loss / window_n:.4f} | val {val:.4f} | lr {lr:.3e} | "
                  f"grad norm {float(gnorm):.3f} | {tps:.0f} tok/s (steps >{a.skip_steps}) | "
                  f"{time.perf_counter() - t_train0:.1f} s", flush=True)
            window_loss, window_n = 0.0, 0
    wall = time.perf_counter() - t_start
    tps = timed_tokens / timed_s if timed_s > 0 else float("nan")
    import resource
    summary = {"seed": a.seed, "steps": steps, "final_val_loss": evals[-1]["val_loss"] if evals else None,
               "tokens_per_s": tps, "train_s": time.perf_counter() - t_train0, "wall_s": wall, "evals": evals,
               "vocab": vocab, "params": n_params, "threads": torch.get_num_threads(),
               "first_loss": first_loss, "step_s": step_s, "step_tokens": [a.batch_size * a.block_size] * steps,
               "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "options": {"foreach": bool(a.foreach), "attn_mask": a.attn_mask, "dropout": a.dropout}}
    print(f"tokens/s (steady state, steps {a.skip_steps + 1}..{steps}, eval excluded): {tps:.0f}")
    print(f"wall time: {wall:.1f} s (training loop {summary['train_s']:.1f} s)")
    if evals:
        print("val loss: " + ", ".join(f"{e['step']}: {e['val_loss']:.4f}" for e in evals))
        print(f"final val loss: {evals[-1]['val_loss']:.4f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
