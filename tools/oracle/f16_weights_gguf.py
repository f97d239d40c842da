#!/usr/bin/env python3
"""Writes a GGUF whose quantized tensors are dequantized and stored as f16, read, dequantized
and written by gguf-py (llama.cpp's own reader, dequantizer and writer, not this project's):
each weight becomes f16(d * q + m), the value the GPU route uploads for a quantized model
(docs/gpu.md: weights in f16 on the device). f32 and f16 tensors and every metadata key are
copied as stored. Its use: `greta perplexity --kl-model` of this file against the original
on the CPU measures what rounding the weights to f16 costs the model's output, a rounding
the CPU emulation's --inject probes (activations only) leave out.

usage: f16_weights_gguf.py IN.gguf OUT.gguf    (needs `pip install gguf`)
"""
import sys

import numpy as np

import gguf


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: f16_weights_gguf.py IN.gguf OUT.gguf")
    src, dst = sys.argv[1], sys.argv[2]
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # The writer adds the architecture and the GGUF.* virtual fields itself; the file
        # type no longer describes the tensors, so it goes.
        if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    kept = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16)
    out = []
    converted = 0
    for t in reader.tensors:
        if t.tensor_type in kept:
            data, ty = t.data, t.tensor_type
        else:
            # dequantize gives the logical shape (rows, columns), f32.
            data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float16)
            ty = gguf.GGMLQuantizationType.F16
            converted += 1
        out.append((t.name, data, ty))
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, ty)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in out:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    print(f"{dst}: {converted} of {len(out)} tensors dequantized to f16")


if __name__ == "__main__":
    main()
