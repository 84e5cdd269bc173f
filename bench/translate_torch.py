#!/usr/bin/python3
"""PyTorch peer of configs/translate_en_es.yaml: torch.nn.Transformer on the
same SentencePiece token ids and the same token-budget batches, in the same
order, as `tfm train` (bench/tfm_translation_data.py replays tfm's batcher;
the tokenizer is read from a tfm checkpoint of the same config and data).

What is matched (layers/seq2seq.cpp, layers/blocks.cpp, layers/init.cpp):
  model   nn.Transformer(d 256, 4 heads, 3+3 layers, ff 1024, relu,
          norm_first=True, batch_first=True): pre-norm blocks with final
          encoder and decoder LayerNorms (eps 1e-5, with bias), as tfm's
          pre-norm stacks. One embedding table shared by source, target and
          the tied output projection (logits = h @ E^T, no bias); inputs
          E[ids]·sqrt(d) + interleaved sinusoidal positions (sin at even,
          cos at odd features), then dropout. Dropout 0.1 on the embeddings,
          the attention probabilities and every residual branch; tfm's
          feed-forward has no inner dropout, so nn.Transformer's
          (layer.dropout, between the two Linears) is replaced by Identity.
          Masks: source padding in encoder self-attention and in
          cross-attention; causal decoder self-attention (target padding is
          only ignored by the loss, as in tfm).
  init    embedding N(0, 1/sqrt(d)); every weight matrix Xavier-uniform, the
          q, k and v blocks of in_proj_weight each as its own d x d matrix
          (tfm has separate q/k/v Linears); biases 0; LayerNorm 1 / 0.
  loss    cross-entropy with label smoothing 0.1 (target (1-e)·onehot + e/V),
          mean over non-pad targets.
  optim   Adam(0.9, 0.98, eps 1e-9, no weight decay), inverse-sqrt schedule
          lr·min(t/w, sqrt(w/t)) with w = 400, grad-norm clip 1.0.

Speed options (bench/train_throughput uses --fast): Adam(foreach=True)
(1.13 has no fused CPU Adam), zero_grad(set_to_none=True), causal mask as a
float -inf bias (--causal float) or bool (bool), no anomaly detection.
bench/torch_peer_options.sh translate (2 alternating rounds of 6 steps at
load 12-16, indicative only), median ms/step: foreach+float 9367,
foreach+bool 9723, no foreach+float 9927, foreach+float with
ATEN_CPU_CAPABILITY=avx512 9123 (its two rounds 10327 and 7920: no clear
winner; PyTorch's elementwise kernels alone are 25-30% faster with it in a
microbenchmark, so re-run idle and set TORCH_ENV in bench/train_throughput
if it wins). bench/train_throughput uses --foreach --causal float.
The timed region of a step is the same as tfm's: lr update, batch
assembly (lists -> tensors), forward, loss.item(), zero_grad, backward,
clipping, optimizer step.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfm_translation_data as tdata  # noqa: E402


def sinusoidal_table(max_len, d):
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]
    i = torch.arange(d // 2, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2.0 * i / d)
    t = torch.empty(max_len, d, dtype=torch.float64)
    t[:, 0::2], t[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return t.float()


class Seq2Seq(nn.Module):
    def __init__(self, vocab, d, n_heads, enc_layers, dec_layers, d_ff, dropout, max_len, pad, causal="float"):
        super().__init__()
        self.d, self.vocab, self.pad = d, vocab, pad
        self.emb = nn.Embedding(vocab, d)
        self.transformer = nn.Transformer(d, n_heads, enc_layers, dec_layers, d_ff, dropout, activation="relu",
                                          batch_first=True, norm_first=True)
        for layer in list(self.transformer.encoder.layers) + list(self.transformer.decoder.layers):
            layer.dropout = nn.Identity()  # tfm's FeedForward has no dropout between its Linears
        self.drop = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d), persistent=False)
        upper = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        mask = upper if causal == "bool" else torch.zeros(max_len, max_len).masked_fill(upper, float("-inf"))
        self.register_buffer("causal", mask, persistent=False)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name == "emb.weight":
                    nn.init.normal_(p, 0.0, 1.0 / math.sqrt(d))
                elif name.endswith("in_proj_weight"):
                    for chunk in p.chunk(3, dim=0):
                        nn.init.xavier_uniform_(chunk)
                elif p.dim() >= 2:
                    nn.init.xavier_uniform_(p)
                elif "norm" in name and name.endswith("weight"):
                    nn.init.ones_(p)
                else:
                    nn.init.zeros_(p)

    def embed(self, ids):
        return self.drop(self.emb(ids) * math.sqrt(self.d) + self.pe[:ids.shape[1]])

    def loss(self, src, tgt_in, tgt_out, label_smoothing):
        src_pad = src == self.pad
        T = tgt_in.shape[1]
        h = self.transformer(self.embed(src), self.embed(tgt_in), tgt_mask=self.causal[:T, :T],
                             src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad)
        logits = h @ self.emb.weight.t()
        return F.cross_entropy(logits.reshape(-1, self.vocab), tgt_out.reshape(-1), ignore_index=self.pad,
                               label_smoothing=label_smoothing)


def load_tfm_weights(model, path):
    """Copies a tfm seq2seq checkpoint's parameters into `model` (names mapped; q, k, v into in_proj)."""
    import h5py
    sub = {"attn_norm": "norm1", "ffn.up": "linear1", "ffn.down": "linear2"}
    enc_sub = dict(sub, ffn_norm="norm2")
    dec_sub = dict(sub, cross_attn="multihead_attn", cross_norm="norm2", ffn_norm="norm3")
    mine = dict(model.named_parameters())
    done = set()
    with h5py.File(path, "r") as f, torch.no_grad():
        g = f["params"]
        names = []
        g.visit(lambda n: names.append(n) if isinstance(g[n], h5py.Dataset) else None)
        for n in names:
            w = torch.from_numpy(g[n][()])
            if n == "shared_emb.weight":
                target, rows = "emb.weight", None
            else:
                side, rest = n.split(".", 1)
                if rest.startswith("final_norm."):
                    target, rows = f"transformer.{side}.norm.{rest.split('.')[-1]}", None
                else:
                    _, i, mod, tail = rest.split(".", 3)  # layers.i.<module>.<param or proj.param>
                    table = enc_sub if side == "encoder" else dec_sub
                    key = f"{mod}.{tail.split('.')[0]}" if mod == "ffn" else mod
                    rows = None
                    if mod.endswith("attn"):
                        proj, param = tail.split(".")
                        attn = table.get(mod, mod)
                        if proj == "out_proj":
                            target = f"transformer.{side}.layers.{i}.{attn}.out_proj.{param}"
                        else:
                            target = f"transformer.{side}.layers.{i}.{attn}.in_proj_{param}"
                            rows = "qkv".index(proj[0])
                    else:
                        target = f"transformer.{side}.layers.{i}.{table[key]}.{tail.split('.')[-1]}"
            p = mine[target]
            if rows is None:
                assert p.shape == w.shape, f"{n} -> {target}: {tuple(w.shape)} vs {tuple(p.shape)}"
                p.copy_(w)
                done.add(target)
            else:
                p.chunk(3, dim=0)[rows].copy_(w)
                done.add(f"{target}[{rows}]")
    missing = [n for n in mine if n not in done and not all(f"{n}[{r}]" in done for r in range(3))]
    assert not missing, f"not in {path}: {missing}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="data/cache/en_es.train.tsv")
    ap.add_argument("--tokenizer-from", required=True, metavar="H5",
                    help="a tfm checkpoint of the same config and data (its SentencePiece model)")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--n-heads", type=int, default=4)
    ap.add_argument("--enc-layers", type=int, default=3)
    ap.add_argument("--dec-layers", type=int, default=3)
    ap.add_argument("--d-ff", type=int, default=1024)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=0.0015)
    ap.add_argument("--warmup", type=int, default=400)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.98)
    ap.add_argument("--eps", type=float, default=1e-9)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1, help="train.seed (the batcher uses seed + 1, as tfm)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--foreach", action="store_true", help="Adam(foreach=True)")
    ap.add_argument("--causal", choices=("float", "bool"), default="float")
    ap.add_argument("--json", default=None)
    ap.add_argument("--load-tfm-weights", default=None, metavar="H5",
                    help="cross-check: start from a tfm checkpoint's parameters (with --skip-batches = its step "
                         "and --dropout 0, step 1's loss must equal tfm's loss at the next step)")
    ap.add_argument("--skip-batches", type=int, default=0, help="batches to draw and drop before training")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = tdata.Pipeline(a.train, a.tokenizer_from, a.block_size, a.batch_tokens, a.seed)
    model = Seq2Seq(data.vocab, a.d_model, a.n_heads, a.enc_layers, a.dec_layers, a.d_ff, a.dropout, a.block_size,
                    data.pad, a.causal)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps,
                           foreach=a.foreach or None)
    n_params = sum(p.numel() for p in model.parameters())
    if a.load_tfm_weights:
        load_tfm_weights(model, a.load_tfm_weights)
    for _ in range(a.skip_batches):
        data.next()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"data: {a.train} ({len(data.examples)} training pairs), vocabulary {data.vocab} (joint), "
          f"model: {n_params} parameters")

    step_s, step_src, step_tgt, losses = [], [], [], []
    for step in range(1, a.steps + 1):
        t0 = time.perf_counter()
        t = float(max(step, 1))
        for g in opt.param_groups:
            g["lr"] = a.lr * min(t / a.warmup, math.sqrt(a.warmup / t))
        _, (src, tin, tout, n_src, n_tgt) = data.next()
        loss = model.loss(torch.tensor(src), torch.tensor(tin), torch.tensor(tout), a.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        lv = loss.item()
        step_s.append(time.perf_counter() - t0)
        step_src.append(n_src)
        step_tgt.append(n_tgt)
        losses.append(lv)
        if not math.isfinite(lv):
            print(f"step {step}: non-finite loss {lv}", file=sys.stderr)
            return 3
        print(f"step {step:>5}/{a.steps} | loss {lv:.4f} | {n_src}+{n_tgt} tokens | {step_s[-1] * 1e3:.0f} ms",
              flush=True)
    summary = {"params": n_params, "vocab": data.vocab, "first_loss": losses[0], "losses": losses, "step_s": step_s,
               "step_src_tokens": step_src, "step_tgt_tokens": step_tgt, "threads": torch.get_num_threads(),
               "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
               "options": {"foreach": bool(a.foreach), "causal": a.causal}}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
