#!/usr/bin/env bash
# The two writers of `greta bench` against transformers: for each synthetic shape, greta
# writes the same random weights as GGUF (--write-gguf, GGUF's RoPE pairing) and as a
# Hugging Face directory (--write-safetensors, Q/K rows in rotate_half order); greta's logits
# from the GGUF are compared with transformers' (f32, CPU) from the directory.
# Needs python3 with torch and transformers. Usage: tools/oracle/check_synthetic_writers.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q --release -p greta-cli
G=./target/release/greta
W=$(mktemp -d)
for s in tiny smollm2-135m; do
  $G bench -m synthetic:$s --backend cpu --prompt-len 4 --gen 1 --reps 1 \
    --write-gguf $W/$s.gguf --write-safetensors $W/$s-hf > /dev/null 2>&1
done
python3 - "$W" "$G" <<'PY'
import random, subprocess, sys
import numpy as np, torch
from transformers import LlamaForCausalLM
w, g = sys.argv[1], sys.argv[2]
ok = True
for name, vocab, n in [("tiny", 512, 24), ("smollm2-135m", 49152, 64)]:
    random.seed(n)
    ids = [random.randrange(3, vocab) for _ in range(n)]
    subprocess.run([g, "logits", "-m", f"{w}/{name}.gguf", "--backend", "cpu", "--ids", ",".join(map(str, ids)),
                    "--out", f"{w}/{name}.npy"], check=True, stdout=subprocess.DEVNULL)
    got = np.load(f"{w}/{name}.npy").reshape(n, vocab)
    m = LlamaForCausalLM.from_pretrained(f"{w}/{name}-hf", dtype=torch.float32).eval()
    with torch.no_grad():
        ref = m(torch.tensor([ids])).logits[0].numpy()
    d = np.abs(got - ref).max()
    top1 = (got.argmax(-1) == ref.argmax(-1)).mean()
    print(f"{name}: max abs {d:.2e}, top-1 {top1:.3f}")
    ok &= d < 1e-3 and top1 == 1.0
sys.exit(0 if ok else 1)
PY
rm -rf "$W"
