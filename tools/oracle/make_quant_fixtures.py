#!/usr/bin/env python3
"""Ground truth for dequantization: random blocks of every GGML type the engine reads,
written into one GGUF file by gguf-py's GGUFWriter, with gguf-py's own dequantization of
each as the expected f32 values.

Writes crates/greta-model/tests/fixtures/quants.gguf: per type T, tensor "T" (the raw
blocks, shape [rows, 256]) and tensor "T.expected" (F32, gguf.quants.dequantize of "T").
Needs: numpy, gguf (pip install gguf, or PYTHONPATH=<llama.cpp>/gguf-py).
"""
from pathlib import Path

import numpy as np
import gguf
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

OUT = Path(__file__).resolve().parents[2] / "crates/greta-model/tests/fixtures/quants.gguf"
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
ROWS, COLS = 3, 512  # 512 per row: whole blocks of both 32 and 256


def random_blocks(rng, qtype):
    """Random bytes, with every f16 scale field replaced by a finite value of a plausible
    size, so that the expected values are finite and exercise every quant bit."""
    block, nbytes = GGML_QUANT_SIZES[qtype]
    n_blocks = ROWS * COLS // block
    if qtype == Q.F32:
        return rng.standard_normal(ROWS * COLS).astype(np.float32).view(np.uint8).reshape(ROWS, -1)
    if qtype == Q.F16:
        return rng.standard_normal(ROWS * COLS).astype(np.float16).view(np.uint8).reshape(ROWS, -1)
    if qtype == Q.BF16:
        f = rng.standard_normal(ROWS * COLS).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(ROWS, -1)
    raw = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    scale = lambda k: (rng.standard_normal(n_blocks) * 0.05).astype(np.float16).view(np.uint8).reshape(n_blocks, 2)
    # Offsets of the f16 fields in each block layout (ggml's block_* structs).
    f16_fields = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
                  Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [nbytes - 2]}[qtype]
    for off in f16_fields:
        raw[:, off:off + 2] = scale(off)
    return raw.reshape(ROWS, -1)


def main():
    rng = np.random.default_rng(20261128)
    w = gguf.GGUFWriter(str(OUT), arch="quant-fixtures")
    for qtype in TYPES:
        data = random_blocks(rng, qtype)
        expected = gguf.quants.dequantize(data, qtype).astype(np.float32)
        assert expected.shape == (ROWS, COLS), (qtype, expected.shape)
        assert np.isfinite(expected).all(), qtype
        w.add_tensor(qtype.name, data, raw_shape=data.shape, raw_dtype=qtype)
        w.add_tensor(qtype.name + ".expected", expected)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
