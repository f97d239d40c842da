#!/usr/bin/env python3
"""Ground truth for tokenizer.json: the ids transformers' tokenizer gives (add_special_tokens
on) for each text in crates/greta-model/tests/fixtures/texts/, with the tokenizer of the tiny
model mha-tied-theta1e4 (a SentencePiece BPE converted to tokenizer.json by transformers).
Writes crates/greta-model/tests/fixtures/tiny/hf_tokenizer_ids.json. Needs transformers.
"""
import json
from pathlib import Path

from transformers import AutoTokenizer

FIX = Path(__file__).resolve().parents[2] / "crates/greta-model/tests/fixtures"


def main():
    tok = AutoTokenizer.from_pretrained(str(FIX / "tiny/mha-tied-theta1e4"))
    # read_bytes: read_text would turn "\r\n" into "\n" (universal newlines).
    ids = {f.name: tok(f.read_bytes().decode("utf-8"))["input_ids"] for f in sorted((FIX / "texts").glob("*.txt"))}
    (FIX / "tiny/hf_tokenizer_ids.json").write_text(json.dumps(ids) + "\n")
    print({k: len(v) for k, v in ids.items()})


if __name__ == "__main__":
    main()
