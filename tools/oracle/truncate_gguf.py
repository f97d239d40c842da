#!/usr/bin/env python3
"""Writes a GGUF holding the first N transformer blocks of a Llama GGUF, read and written by
gguf-py (llama.cpp's own reader/writer, not this project's): every metadata key copied
(block_count set to N), the embedding, the blocks 0..N-1 and the output norm/head copied
byte for byte in their stored types. The model's first N layers compute exactly what they
compute inside the whole model, so a GPU-vs-CPU audit of the truncated file checks those
layers of the real weights. Its use: the default model (98 MB) does not fit one GPU call's
64 MiB carry; its first 10 layers (incl. layer 9, where its massive activations live) do.

usage: truncate_gguf.py IN.gguf OUT.gguf N    (needs `pip install gguf`)
"""
import sys

import gguf


def main() -> None:
    src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    count_key = gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)
    total = reader.fields[count_key].contents()
    if not 0 < n <= total:
        sys.exit(f"N = {n}: the model has {total} blocks; 1..{total} accepted")
    writer = gguf.GGUFWriter(dst, arch, endianess=reader.endianess)
    for field in reader.fields.values():
        # The writer adds the architecture and the GGUF.* virtual fields itself.
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = n if field.name == count_key else field.contents()
        writer.add_key_value(field.name, value, vtype, sub_type=sub)

    def kept(name: str) -> bool:
        return not name.startswith("blk.") or int(name.split(".")[1]) < n

    tensors = [t for t in reader.tensors if kept(t.name)]
    for t in tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    print(f"{dst}: {len(tensors)} of {len(reader.tensors)} tensors, {n} of {total} blocks")


if __name__ == "__main__":
    main()
