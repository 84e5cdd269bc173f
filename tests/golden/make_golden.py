#!/usr/bin/python3
"""Golden numbers for tfm's GPT and Seq2Seq, from an independent PyTorch model.

Run from the repository root with the system Python (PyTorch 1.13):

    /usr/bin/python3 tests/golden/make_golden.py

It writes tests/golden/golden.txt (next to this script). tests/test_golden.cpp
reads that file; the C++ test suite itself never needs PyTorch.

The models below are written from scratch in plain torch ops, following the
architecture defined in layers/ (nothing is imported from tfm). Parameters are
drawn in float32 from torch.manual_seed: N(0, 0.3^2), norm weights
1 + N(0, 0.3^2), and gpt_b's untied token embedding N(0, 0.02^2) so that its
first RMSNorm sees mean(x^2) ~ 4e-4 and the eps (1e-5) matters. They are
written with %.9g, which round-trips float32 exactly, so tfm loads
bit-identical weights. Everything downstream (logits, loss, gradients) is
computed in float64, so the reference carries no float32 rounding of its own.

Models (configs are hard-coded identically in tests/test_golden.cpp):
  gpt_a   vocab 13, block 8, d_model 16, 2 heads, 2 layers, d_ff 32, learned
          positions, fused qkv, layernorm, GELU (erf), biases, pre-norm,
          lm_head tied to tok_emb. Batch 2, T 8.
  gpt_b   same sizes, rotary positions (half-split), rmsnorm (eps
          1e-5, the Norm default), SwiGLU, no biases, separate q/k/v
          projections, untied lm_head. One target is -100 (ignored).
  s2s     d_model 16, 2 heads, 2 encoder + 2 decoder layers, d_ff 32, src vocab
          13, tgt vocab 11, pad_id 0, max_len 16, sinusoidal positions,
          layernorm, ReLU, pre-norm, tied output, label smoothing 0.1. Batch 2
          with padding in source and target.

File format (plain text, one record per tensor, two lines per record):
    <name> <ndim> <d0> <d1> ... <d{ndim-1}>
    <v0> <v1> ... <v{numel-1}>
Values are row-major, space-separated; integer tensors are written as
integers, float tensors with %.9g. A scalar has ndim 0 and one value. Lines
starting with '#' are comments. Record names:
    <model>/input/<ids | targets | src | tgt_in | tgt_out>   (int)
    <model>/param/<tfm dotted parameter name>
    <model>/logits                                           [B, T, V]
    <model>/loss                                             scalar
    <model>/grad/<tfm dotted parameter name>                 d loss / d param
"""

import math
import os

import torch
import torch.nn.functional as F

STD = 0.3  # weight scale: large enough that every term matters numerically


# ----------------------------------------------------------------- parameters

class Params:
    """Ordered name -> float32 leaf tensor, drawn from one torch generator."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.p = {}

    def _randn(self, shape):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float32)

    def weight(self, name, *shape, std=STD):
        self.p[name] = self._randn(shape) * std

    def norm_weight(self, name, dim):
        self.p[name] = 1.0 + self._randn((dim,)) * STD

    def linear(self, name, d_in, d_out, bias):
        self.weight(name + ".weight", d_out, d_in)
        if bias:
            self.weight(name + ".bias", d_out)

    def norm(self, name, dim, kind, bias):
        self.norm_weight(name + ".weight", dim)
        if kind == "layer" and bias:
            self.weight(name + ".bias", dim)

    def leaves(self):
        """float64 copies requiring grad, keyed by name."""
        return {k: v.double().requires_grad_(True) for k, v in self.p.items()}


def block_params(P, prefix, c, cross):
    D, Fd = c["d_model"], c["d_ff"]
    bias = c["bias"]
    if c["fused_qkv"]:
        P.linear(prefix + "self_attn.qkv_proj", D, 3 * D, bias)
    else:
        for n in ("q_proj", "k_proj", "v_proj"):
            P.linear(prefix + "self_attn." + n, D, D, bias)
    P.linear(prefix + "self_attn.out_proj", D, D, bias)
    P.norm(prefix + "attn_norm", D, c["norm"], bias)
    if cross:
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            P.linear(prefix + "cross_attn." + n, D, D, bias)
        P.norm(prefix + "cross_norm", D, c["norm"], bias)
    P.linear(prefix + "ffn.up", D, Fd, bias)
    if c["act"] == "swiglu":
        P.linear(prefix + "ffn.gate", D, Fd, bias)
    P.linear(prefix + "ffn.down", Fd, D, bias)
    P.norm(prefix + "ffn_norm", D, c["norm"], bias)


def stack_params(P, prefix, c, n_layers, cross):
    for i in range(n_layers):
        block_params(P, "%slayers.%d." % (prefix, i), c, cross)
    P.norm(prefix + "final_norm", c["d_model"], c["norm"], c["bias"])  # pre-norm only


# ----------------------------------------------------------------- functional model

def lin(W, x, name):
    return F.linear(x, W[name + ".weight"], W.get(name + ".bias"))


def norm(W, x, name, c):
    w = W[name + ".weight"]
    if c["norm"] == "layer":
        return F.layer_norm(x, (x.shape[-1],), w, W.get(name + ".bias"), eps=1e-5)
    # RMSNorm: x / sqrt(mean(x^2) + eps) * w, eps = Norm's default 1e-5
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + 1e-5) * w


def rope(x, base=10000.0):
    """x [B, H, T, Dh]; half-split pairs (i, i + Dh/2), angle p * base^(-2i/Dh)."""
    T, Dh = x.shape[-2], x.shape[-1]
    half = Dh // 2
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    inv = base ** (-2.0 * torch.arange(half, dtype=torch.float64) / Dh)
    ang = pos * inv[None, :]  # [T, half]
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def attention(W, name, x, mem, c, causal, key_pad, use_rope):
    """x [B, Tq, D]; mem [B, Tk, D] or None (self); key_pad bool [B, Tk] or None."""
    B, Tq, D = x.shape
    H = c["n_heads"]
    Dh = D // H
    if mem is None:
        if c["fused_qkv"]:
            qkv = lin(W, x, name + ".qkv_proj")
            q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        else:
            q, k, v = (lin(W, x, name + n) for n in (".q_proj", ".k_proj", ".v_proj"))
    else:
        q = lin(W, x, name + ".q_proj")
        k, v = lin(W, mem, name + ".k_proj"), lin(W, mem, name + ".v_proj")
    Tk = k.shape[1]

    def heads(t):
        return t.reshape(B, t.shape[1], H, Dh).permute(0, 2, 1, 3)  # [B, H, T, Dh]

    q, k, v = heads(q), heads(k), heads(v)
    if use_rope:
        q, k = rope(q), rope(k)
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(Dh)  # [B, H, Tq, Tk]
    masked = torch.zeros(B, 1, Tq, Tk, dtype=torch.bool)
    if causal:
        masked = masked | torch.triu(torch.ones(Tq, Tk, dtype=torch.bool), diagonal=1)[None, None]
    if key_pad is not None:
        masked = masked | key_pad[:, None, None, :]
    s = s.masked_fill(masked, float("-inf"))
    p = torch.softmax(s, dim=-1)
    o = torch.matmul(p, v).permute(0, 2, 1, 3).reshape(B, Tq, D)
    return lin(W, o, name + ".out_proj")


def ffn(W, name, x, c):
    if c["act"] == "gelu":
        return lin(W, F.gelu(lin(W, x, name + ".up")), name + ".down")  # erf form
    if c["act"] == "relu":
        return lin(W, torch.relu(lin(W, x, name + ".up")), name + ".down")
    if c["act"] == "swiglu":
        g = lin(W, x, name + ".gate")
        return lin(W, g * torch.sigmoid(g) * lin(W, x, name + ".up"), name + ".down")
    raise ValueError(c["act"])


def block(W, prefix, x, c, causal, self_pad, mem=None, mem_pad=None, use_rope=False):
    # pre-norm residuals: x = x + sublayer(norm(x))
    x = x + attention(W, prefix + "self_attn", norm(W, x, prefix + "attn_norm", c), None, c, causal, self_pad,
                      use_rope)
    if mem is not None:
        x = x + attention(W, prefix + "cross_attn", norm(W, x, prefix + "cross_norm", c), mem, c, False, mem_pad,
                          False)
    return x + ffn(W, prefix + "ffn", norm(W, x, prefix + "ffn_norm", c), c)


def stack(W, prefix, x, c, n_layers, causal, self_pad, mem=None, mem_pad=None, use_rope=False):
    for i in range(n_layers):
        x = block(W, "%slayers.%d." % (prefix, i), x, c, causal, self_pad, mem, mem_pad, use_rope)
    return norm(W, x, prefix + "final_norm", c)


def smoothed_ce(logits2d, targets, ignore, eps):
    """Mean over non-ignored rows of -(1-eps)*logp[t] - eps/C * sum_j logp[j]."""
    C = logits2d.shape[1]
    logp = torch.log_softmax(logits2d, dim=-1)
    keep = targets != ignore
    t = torch.where(keep, targets, torch.zeros_like(targets))
    nll = -logp.gather(1, t[:, None])[:, 0]
    smooth = -logp.sum(-1) / C
    row = (1.0 - eps) * nll + eps * smooth
    loss = row[keep].sum() / keep.sum()
    # Cross-check with PyTorch's own implementation.
    ref = F.cross_entropy(logits2d, targets, ignore_index=ignore, label_smoothing=eps)
    assert torch.allclose(loss, ref, rtol=1e-12, atol=1e-12), (loss.item(), ref.item())
    return loss


def sinusoidal(T, D):
    """Interleaved: PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(same)."""
    pe = torch.zeros(T, D, dtype=torch.float64)
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    div = 10000.0 ** (2.0 * torch.arange(D // 2, dtype=torch.float64) / D)
    pe[:, 0::2] = torch.sin(pos / div)
    pe[:, 1::2] = torch.cos(pos / div)
    return pe


# ----------------------------------------------------------------- models

def gpt_params(c, seed):
    P = Params(seed)
    # gpt_b draws a small token embedding (it is untied), so the first RMSNorm
    # sees mean(x^2) ~ 4e-4 and its eps (1e-5) changes the output measurably.
    P.weight("tok_emb.weight", c["vocab"], c["d_model"], std=c.get("emb_std", STD))
    if c["positions"] == "learned":
        P.weight("pos_emb.weight", c["block"], c["d_model"])
    stack_params(P, "decoder.", c, c["n_layers"], cross=False)
    if not c["tied"]:
        P.weight("lm_head.weight", c["vocab"], c["d_model"])  # never a bias
    return P


def gpt_forward(W, c, ids):
    T = ids.shape[1]
    x = F.embedding(ids, W["tok_emb.weight"])
    if c["positions"] == "learned":
        x = x + W["pos_emb.weight"][:T]
    x = stack(W, "decoder.", x, c, c["n_layers"], causal=True, self_pad=None, use_rope=c["positions"] == "rope")
    head = W["tok_emb.weight"] if c["tied"] else W["lm_head.weight"]
    return torch.matmul(x, head.t())


def s2s_params(c, seed):
    P = Params(seed)
    P.weight("src_emb.weight", c["src_vocab"], c["d_model"])
    P.weight("tgt_emb.weight", c["tgt_vocab"], c["d_model"])
    stack_params(P, "encoder.", c, c["enc_layers"], cross=False)
    stack_params(P, "decoder.", c, c["dec_layers"], cross=True)
    return P


def s2s_forward(W, c, src, tgt_in):
    D = c["d_model"]

    def embed(table, ids):
        return F.embedding(ids, table) * math.sqrt(D) + sinusoidal(ids.shape[1], D)

    src_pad = src == c["pad_id"]
    mem = stack(W, "encoder.", embed(W["src_emb.weight"], src), c, c["enc_layers"], causal=False, self_pad=src_pad)
    x = stack(W, "decoder.", embed(W["tgt_emb.weight"], tgt_in), c, c["dec_layers"], causal=True, self_pad=None,
              mem=mem, mem_pad=src_pad)
    return torch.matmul(x, W["tgt_emb.weight"].t())


# ----------------------------------------------------------------- output

class Writer:
    def __init__(self):
        self.lines = []

    def add(self, name, t):
        t = t.detach()
        shape = list(t.shape)
        self.lines.append(" ".join([name, str(len(shape))] + [str(d) for d in shape]))
        flat = t.reshape(-1).tolist()
        if t.dtype in (torch.int32, torch.int64):
            self.lines.append(" ".join(str(int(v)) for v in flat))
        else:
            self.lines.append(" ".join("%.9g" % v for v in flat))


def run_model(w, model, P, forward, inputs, loss_fn):
    for name, inp in inputs.items():
        w.add("%s/input/%s" % (model, name), inp)
    for name, p in P.p.items():
        w.add("%s/param/%s" % (model, name), p)
    W = P.leaves()
    logits = forward(W)
    loss = loss_fn(logits)
    loss.backward()
    w.add(model + "/logits", logits)
    w.add(model + "/loss", loss)
    for name, leaf in W.items():
        assert leaf.grad is not None, name
        w.add("%s/grad/%s" % (model, name), leaf.grad)
    print("%-6s loss %.6f, %d parameter tensors" % (model, loss.item(), len(W)))


def main():
    w = Writer()
    g = torch.Generator().manual_seed(1234)

    # ---- GPT (a): learned positions, fused qkv, layernorm, GELU, tied
    ca = dict(vocab=13, block=8, d_model=16, n_heads=2, n_layers=2, d_ff=32, positions="learned", norm="layer",
              act="gelu", bias=True, fused_qkv=True, tied=True)
    ids = torch.randint(0, 13, (2, 8), generator=g)
    tgt = torch.randint(0, 13, (2, 8), generator=g)
    run_model(w, "gpt_a", gpt_params(ca, 1), lambda W: gpt_forward(W, ca, ids), {"ids": ids, "targets": tgt},
              lambda lg: smoothed_ce(lg.reshape(-1, 13), tgt.reshape(-1), -100, 0.0))

    # ---- GPT (b): rope, rmsnorm, SwiGLU, no biases, separate q/k/v, untied head
    cb = dict(vocab=13, block=8, d_model=16, n_heads=2, n_layers=2, d_ff=32, positions="rope", norm="rms",
              act="swiglu", bias=False, fused_qkv=False, tied=False, emb_std=0.02)
    ids = torch.randint(0, 13, (2, 8), generator=g)
    tgt = torch.randint(0, 13, (2, 8), generator=g)
    tgt[1, 5] = -100  # one ignored target
    run_model(w, "gpt_b", gpt_params(cb, 2), lambda W: gpt_forward(W, cb, ids), {"ids": ids, "targets": tgt},
              lambda lg: smoothed_ce(lg.reshape(-1, 13), tgt.reshape(-1), -100, 0.0))

    # ---- Seq2Seq: sinusoidal, layernorm, ReLU, tied output, label smoothing
    cs = dict(src_vocab=13, tgt_vocab=11, d_model=16, n_heads=2, enc_layers=2, dec_layers=2, d_ff=32, pad_id=0,
              norm="layer", act="relu", bias=True, fused_qkv=False)
    S, T = 7, 6
    src = torch.randint(1, 13, (2, S), generator=g)
    src[0, 6:] = 0  # one pad in row 0
    src[1, 4:] = 0  # three pads in row 1
    seq = torch.randint(2, 11, (2, T + 1), generator=g)
    seq[:, 0] = 1  # BOS
    seq[1, 4:] = 0  # row 1: 3 real tokens after BOS, then padding
    tgt_in, tgt_out = seq[:, :-1].clone(), seq[:, 1:].clone()
    run_model(w, "s2s", s2s_params(cs, 3), lambda W: s2s_forward(W, cs, src, tgt_in),
              {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out},
              lambda lg: smoothed_ce(lg.reshape(-1, 11), tgt_out.reshape(-1), 0, 0.1))

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.txt")
    with open(path, "w") as f:
        f.write("# Generated by tests/golden/make_golden.py (PyTorch %s); see that script for the format.\n"
                % torch.__version__)
        f.write("\n".join(w.lines) + "\n")
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
