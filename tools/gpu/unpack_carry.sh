#!/usr/bin/env bash
# On the GPU machine: unpacks target/carry (one xz-compressed carry that fits 64 MiB with the
# tree) into the paths the scripts use: greta.xz -> target/device/greta, gpu-ops.xz,
# hiprt-gpu.xz, gpu-model.xz -> target/device/, smollm2-10l.gguf.xz -> target/dm10/,
# kernels/ -> target/device/kernels.
# Files absent from the carry are skipped. Run by verify_carried.sh and
# split_inputs_compare.sh; make the carry here with xz -c (see verify_carried.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p target/device target/dm10
python3 - <<'PY'
import lzma, os, shutil
for src, dst in [("greta.xz", "target/device/greta"), ("gpu-ops.xz", "target/device/gpu-ops"),
                 ("hiprt-gpu.xz", "target/device/hiprt-gpu"), ("gpu-model.xz", "target/device/gpu-model"),
                 ("smollm2-10l.gguf.xz", "target/dm10/smollm2-10l.gguf")]:
    if not os.path.exists("target/carry/" + src):
        continue
    with lzma.open("target/carry/" + src) as f, open(dst, "wb") as o:
        shutil.copyfileobj(f, o)
    os.chmod(dst, 0o755)
PY
# The kernels may come xz-compressed (kernels.txz: 0.3 MB against 2.3), for a tight carry.
# (Python's tarfile, not tar -J: the GPU machine need not have xz.)
[ -f target/carry/kernels.txz ] && python3 -c "import tarfile; tarfile.open('target/carry/kernels.txz').extractall('target/carry')"
rm -rf target/device/kernels && cp -r target/carry/kernels target/device/kernels
