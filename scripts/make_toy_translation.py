#!/usr/bin/env python3
"""A toy translation corpus for configs/translate_small.yaml: English number
words -> digits ("three hundred twenty one thousand four hundred five" ->
"321405"), numbers drawn without replacement from 0..999999 with a fixed
seed, so the valid and test numbers are never seen in training.

    python3 scripts/make_toy_translation.py [OUT_DIR] [--train N]

writes OUT_DIR/numbers.{train,valid,test}.tsv (default data/cache/, 40000
training pairs, 1000 each for validation and test). Standard library only;
the same arguments give the same files.
"""
import argparse
import os
import random

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def below_thousand(n):
    words = []
    if n >= 100:
        words += [ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(TENS[n // 10])
        if n % 10:
            words.append(ONES[n % 10])
    elif n > 0:
        words.append(ONES[n])
    return words


def words(n):
    if n == 0:
        return "zero"
    out = []
    if n >= 1000:
        out += below_thousand(n // 1000) + ["thousand"]
    out += below_thousand(n % 1000)
    return " ".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", default="data/cache")
    ap.add_argument("--train", type=int, default=40000)
    ap.add_argument("--held-out", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=16)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    nums = rng.sample(range(1000000), a.train + 2 * a.held_out)
    os.makedirs(a.out_dir, exist_ok=True)
    parts = {"train": nums[:a.train], "valid": nums[a.train:a.train + a.held_out],
             "test": nums[a.train + a.held_out:]}
    for name, part in parts.items():
        path = os.path.join(a.out_dir, "numbers.%s.tsv" % name)
        with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            for n in part:
                f.write("%s\t%d\n" % (words(n), n))
        os.replace(path + ".tmp", path)
        print("wrote %s (%d pairs)" % (path, len(part)))


if __name__ == "__main__":
    main()
