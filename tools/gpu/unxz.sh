#!/usr/bin/env bash
# Decompresses a carried xz file into an executable: unxz.sh SRC.xz DST. Python's lzma, since
# the GPU machine need not have xz; the variant scripts unpack their builds with it.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SRC.xz DST" >&2; exit 2; }
python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" "$1" "$2"
chmod +x "$2"
