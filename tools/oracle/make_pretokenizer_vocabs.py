#!/usr/bin/env python3
"""Ground truth for the gpt2-style pre-tokenizer variants other than `smollm`: vocabulary-only
GGUF files that carry the default model's BPE vocabulary and merges under
`tokenizer.ggml.pre` = `llama-bpe` and `default`, and the ids llama.cpp's llama-tokenize gives
for each text in crates/greta-model/tests/fixtures/texts/ with each.

Writes crates/greta-model/tests/fixtures/vocab/<pre>.gguf and expected.json.
Needs gguf-py and llama-tokenize (see llama_cpp_default_model.py).
Run: LLAMA_CPP_BIN=... MODEL=<default model .gguf> python3 tools/oracle/make_pretokenizer_vocabs.py
"""
import json
import os
import subprocess
from pathlib import Path

import gguf

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "crates/greta-model/tests/fixtures"
OUT = FIX / "vocab"
BIN = Path(os.environ["LLAMA_CPP_BIN"])
MODEL = os.environ["MODEL"]
PRES = ["llama-bpe", "default"]
KEYS = ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"]


def field_value(reader, key):
    f = reader.fields[key]
    t = f.types[0]
    if t == gguf.GGUFValueType.ARRAY:
        sub = f.types[1]
        items = [f.parts[i] for i in f.data]
        if sub == gguf.GGUFValueType.STRING:
            return sub, [bytes(x).decode("utf-8") for x in items]
        return sub, [int(x[0]) for x in items]
    if t == gguf.GGUFValueType.STRING:
        return t, bytes(f.parts[f.data[0]]).decode("utf-8")
    return t, int(f.parts[f.data[0]][0])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    src = gguf.GGUFReader(MODEL)
    values = {k: field_value(src, k) for k in KEYS}
    expected = {}
    for pre in PRES:
        path = OUT / f"{pre}.gguf"
        w = gguf.GGUFWriter(str(path), arch="llama")
        w.add_tokenizer_model(values["tokenizer.ggml.model"][1])
        w.add_tokenizer_pre(pre)
        w.add_token_list(values["tokenizer.ggml.tokens"][1])
        w.add_token_types(values["tokenizer.ggml.token_type"][1])
        w.add_token_merges(values["tokenizer.ggml.merges"][1])
        w.add_bos_token_id(values["tokenizer.ggml.bos_token_id"][1])
        w.add_eos_token_id(values["tokenizer.ggml.eos_token_id"][1])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        ids = {}
        for f in sorted((FIX / "texts").glob("*.txt")):
            out = subprocess.run([str(BIN / "llama-tokenize"), "-m", str(path), "-f", str(f), "--ids", "--log-disable"],
                                 check=True, capture_output=True, text=True).stdout
            ids[f.name] = json.loads(out.strip().splitlines()[-1])
        expected[pre] = ids
    (OUT / "expected.json").write_text(json.dumps(expected) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
