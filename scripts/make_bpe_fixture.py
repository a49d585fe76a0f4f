#!/usr/bin/env python3
"""Byte-level BPE fixtures (issue 21): a GPT-2-style tokenizer that merges digit runs, and a tiny
GPT-2 folder that uses it.

    /tmp/venv-gpt2/bin/python scripts/make_bpe_fixture.py

Needs tokenizers, transformers, torch and safetensors from PyPI (scripts/gpt2_interop.sh makes a
venv with them). Writes:

- crates/memaudit-data/tests/data/bpe_digits/: a byte-level BPE trained with Hugging Face
  `tokenizers` on the first 60,000 characters of the embedded corpus plus lines of random
  numbers, so that, as in GPT-2's real BPE, runs of digits merge into multi-digit tokens
  ("my pin is 1234" is not one token per digit, and how many tokens a number takes depends on the
  number). `tokenizer.json` (the `tokenizers` format), the same vocabulary as `vocab.json` +
  `merges.txt` (GPT-2's original files), and `expected.json`: texts with the ids and decoded
  text that the Python library gives, which the Rust tests must reproduce.
- crates/memaudit/tests/data/gpt2_bpe/: a tiny random GPT2LMHeadModel whose vocabulary is that
  tokenizer's, as `save_pretrained` writes it (config.json, model.safetensors) with the
  tokenizer files GPT2TokenizerFast.save_pretrained writes: the input of `memaudit import --from-hf`.
"""
import gzip
import json
import random
import shutil
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates" / "memaudit-data" / "tests" / "data" / "bpe_digits"
GPT = ROOT / "crates" / "memaudit" / "tests" / "data" / "gpt2_bpe"
CORPUS = ROOT / "crates" / "memaudit-data" / "corpus" / "moby_dick_ch1-42.txt.gz"
VOCAB = 384
EOT = "<|endoftext|>"

# Texts whose encodings the Rust side must reproduce: digit runs of several lengths (merged
# differently), the canary template's literal text, non-ASCII, whitespace runs and newlines.
PROBES = [
    "my pin is 1234",
    "my pin is 9075",
    "my pin is 1 2 3 4",
    "Call me Ishmael. Some years ago 1851",
    "  two  spaces\nand a newline\n\n",
    "caf\u00e9 \u2014 na\u00efve \U0001F40B",
    "0123456789 00 000 12345678",
    "",
]


def train():
    text = gzip.decompress(CORPUS.read_bytes()).decode("utf-8")[:60_000]
    rng = random.Random(21)
    numbers = [" ".join(str(rng.randrange(10 ** rng.randint(1, 6))) for _ in range(8))
               for _ in range(3000)]
    tok = Tokenizer(models.BPE())
    # GPT-2's pre-tokenizer: its regex (digit runs stay together, so merges can join digits)
    # and the byte-to-unicode map; no prefix space, as GPT-2.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text] + numbers, trainer)
    return tok


def main():
    tok = train()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    tok.save(str(DATA / "tokenizer.json"))
    tok.model.save(str(DATA), None)  # vocab.json + merges.txt
    expected = []
    for t in PROBES:
        ids = tok.encode(t).ids
        expected.append({"text": t, "ids": ids, "decoded": tok.decode(ids),
                         "tokens": [tok.id_to_token(i) for i in ids]})
    digit_tokens = sorted(t for t in tok.get_vocab() if t.lstrip("\u0120").isdigit()
                          and len(t.lstrip("\u0120")) > 1)
    assert digit_tokens, "the fixture must merge digits"
    json.dump({"vocab_size": tok.get_vocab_size(), "multi_digit_tokens": digit_tokens,
               "probes": expected}, open(DATA / "expected.json", "w"), indent=1,
              ensure_ascii=False)

    # A tiny GPT-2 on that vocabulary, in save_pretrained's layout, with its tokenizer.
    torch.manual_seed(5)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=16, n_layer=2,
                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=tok.token_to_id(EOT), eos_token_id=tok.token_to_id(EOT))
    m = GPT2LMHeadModel(cfg).eval()
    shutil.rmtree(GPT, ignore_errors=True)
    m.save_pretrained(GPT, safe_serialization=True)
    (GPT / "generation_config.json").unlink(missing_ok=True)
    fast = GPT2TokenizerFast(tokenizer_file=str(DATA / "tokenizer.json"), eos_token=EOT,
                             bos_token=EOT, unk_token=EOT)
    fast.save_pretrained(GPT)
    # Logits transformers gives for the first probe text, for the import test.
    ids = torch.tensor([tok.encode(PROBES[3]).ids])
    with torch.no_grad():
        logits = m(ids).logits[0]
    json.dump({"text": PROBES[3], "ids": ids[0].tolist(),
               "last_log_softmax": torch.log_softmax(logits[-1], -1).tolist()},
              open(GPT / "expected.json", "w"))
    sizes = {str(p.relative_to(ROOT)): p.stat().st_size for d in (DATA, GPT) for p in d.iterdir()}
    print(json.dumps({"multi_digit_tokens": len(digit_tokens), "bytes": sum(sizes.values()),
                      "files": sizes}, indent=1))


if __name__ == "__main__":
    main()
