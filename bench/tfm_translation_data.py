"""tfm's translation data pipeline in Python: the same token ids and the same
token-budget batches, in the same order, as `tfm train` on a seq2seq config.

Used by bench/translate_torch.py (the PyTorch peer) and by
bench/train_throughput_report.py (token and FLOP counts of the tfm side).
No torch here; needs numpy, h5py (python3-h5py) and sentencepiece
(python3-sentencepiece), which reads the SentencePiece model tfm trained and
stored in its checkpoint.

Mirrors (keep in step with the C++):
  data/translation.cpp   read_tsv (BOM, CR, blank lines, trim), make_batch
                         (src; [BOS]+tgt; tgt+[EOS]; pad), TranslationBatcher
                         (per-epoch Philox shuffle, length sort in windows of
                         ~100 batches, greedy token-budget cut, batch shuffle)
  train/task_data.cpp    pair_fits
  train/translation_task.cpp  batcher seed = train.seed + 1
  core/rng.cpp           philox4x32 and Generator::next_u64
"""
import h5py
import numpy as np

M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1
_WS = " \t\r\n\f\v"  # data/translation.cpp is_space


def philox4x32(key, counters):
    """Philox-4x32-10 of uint64 counters under a 64-bit key: four uint32 arrays."""
    c = np.asarray(counters, dtype=np.uint64)
    c0, c1 = c & np.uint64(M32), c >> np.uint64(32)
    c2 = np.zeros_like(c0)
    c3 = np.zeros_like(c0)
    k0, k1 = key & M32, (key >> 32) & M32
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    for _ in range(10):
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & np.uint64(M32),
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & np.uint64(M32))
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def next_u64s(key, first, n):
    """n successive Generator::next_u64() values from counter `first` (Python ints)."""
    r0, r1, _, _ = philox4x32(key, np.arange(first, first + n, dtype=np.uint64))
    return ((r0 << np.uint64(32)) | r1).tolist()


def read_tsv(path):
    with open(path, "rb") as f:
        text = f.read().decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    pairs = []
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip(_WS):
            continue
        src, tgt = line.split("\t")
        pairs.append((src.strip(_WS), tgt.strip(_WS)))
    return pairs


def load_sentencepiece(checkpoint):
    """The joint SentencePiece model stored in a tfm checkpoint."""
    import sentencepiece as spm
    with h5py.File(checkpoint, "r") as f:
        kind = f["tokenizer"].attrs["kind"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind.startswith("pair:"):
            raise SystemExit(f"{checkpoint}: tokenizer '{kind}' is a source/target pair; the peer needs a joint vocabulary")
        blob = bytes(f["tokenizer"][()])
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(blob)
    return sp


def encode_pairs(pairs, sp, max_len):
    out = []
    for s, t in pairs:
        e = (sp.EncodeAsIds(s), sp.EncodeAsIds(t))
        if e[0] and e[1] and len(e[0]) <= max_len and len(e[1]) + 1 <= max_len:  # pair_fits
            out.append(e)
    return out


def padded_len(e):
    return max(len(e[0]), len(e[1]) + 1)


class Batcher:
    """TranslationBatcher: next() returns the example indices of the next batch."""

    def __init__(self, examples, batch_tokens, seed):
        self.ex, self.budget, self.seed = examples, batch_tokens, seed
        self.epoch, self.batches, self.pos = -1, [], 0
        n = len(examples)
        total = sum(padded_len(e) for e in examples)
        per_batch = max(1, batch_tokens // max(1, total // n))
        self.window = max(1, 100 * per_batch)

    def _build(self, epoch):
        n = len(self.ex)
        key = (self.seed ^ ((0x9E3779B97F4A7C15 * (epoch + 1)) & M64)) & M64
        draws = next_u64s(key, 0, n - 1)
        order = list(range(n))
        for k, i in enumerate(range(n - 1, 0, -1)):
            j = draws[k] % (i + 1)
            order[i], order[j] = order[j], order[i]
        used = n - 1
        lens = [(padded_len(e), len(e[0]), len(e[1])) for e in self.ex]
        batches = []
        for w in range(0, n, self.window):
            run = sorted(order[w:w + self.window], key=lambda i: lens[i])  # stable, as std::stable_sort
            cur, cur_max = [], 0
            for i in run:
                m = max(cur_max, lens[i][0])
                if cur and m * (len(cur) + 1) > self.budget:
                    batches.append(cur)
                    cur, cur_max = [], 0
                cur.append(i)
                cur_max = max(cur_max, lens[i][0])
            if cur:
                batches.append(cur)
        draws = next_u64s(key, used, len(batches) - 1)
        for k, i in enumerate(range(len(batches) - 1, 0, -1)):
            j = draws[k] % (i + 1)
            batches[i], batches[j] = batches[j], batches[i]
        self.batches, self.epoch, self.start = batches, epoch, self.pos

    def next(self):
        if self.epoch < 0 or self.pos - self.start >= len(self.batches):
            self._build(self.epoch + 1)
        idx = self.batches[self.pos - self.start]
        self.pos += 1
        return idx


def make_batch(examples, idx, pad, bos, eos):
    """Padded (src, tgt_in, tgt_out) as nested lists, and the real token counts."""
    S = max(1, max(len(examples[i][0]) for i in idx))
    T = max(1, max(len(examples[i][1]) + 1 for i in idx))
    src, tin, tout = [], [], []
    n_src = n_tgt = 0
    for i in idx:
        s, t = examples[i]
        src.append(s + [pad] * (S - len(s)))
        tin.append([bos] + t + [pad] * (T - 1 - len(t)))
        tout.append(t + [eos] + [pad] * (T - 1 - len(t)))
        n_src += len(s)
        n_tgt += len(t) + 1
    return src, tin, tout, n_src, n_tgt


def batch_flops(examples, idx, d, d_ff, vocab, enc_layers, dec_layers):
    """Model training FLOPs of one batch over its real (non-pad) tokens:
    6 x (matmul weights) per token they touch, plus 12·d·(query len)·(key len)
    per attention per layer for scores and weighted sum (forward + backward,
    full rectangle, the PaLM / nanoGPT convention)."""
    f = 0
    for i in idx:
        s, t = len(examples[i][0]), len(examples[i][1]) + 1
        f += enc_layers * (6 * (4 * d * d + 2 * d * d_ff) * s + 12 * d * s * s)
        f += dec_layers * (6 * (4 * d * d + 2 * d * d_ff) * t + 12 * d * t * t    # self-attention + FFN
                           + 6 * 2 * d * d * t + 6 * 2 * d * d * s + 12 * d * t * s)  # cross: q,o on t; k,v on s
        f += 6 * vocab * d * t  # tied output projection
    return f


class Pipeline:
    """Everything one side needs: examples, ids, and the batch sequence."""

    def __init__(self, train_tsv, checkpoint, block_size, batch_tokens, seed):
        self.sp = load_sentencepiece(checkpoint)
        self.pad, self.bos, self.eos = self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id()
        if min(self.pad, self.bos, self.eos) < 0:
            raise SystemExit(f"{checkpoint}: the tokenizer has no pad/bos/eos ids")
        self.vocab = self.sp.GetPieceSize()
        self.examples = encode_pairs(read_tsv(train_tsv), self.sp, block_size)
        self.batcher = Batcher(self.examples, batch_tokens, seed + 1)

    def next(self):
        idx = self.batcher.next()
        return idx, make_batch(self.examples, idx, self.pad, self.bos, self.eos)
