#!/usr/bin/env bash
# Builds (release) and prints the path of one integration-test binary of the workspace in the
# current directory: test_binary.sh CRATE TEST-TARGET (e.g. greta-kernels gpu_ops). Used by
# build_for_device.sh and build_variant.sh, whose binaries the GPU machine runs.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 CRATE TEST-TARGET" >&2; exit 2; }
cargo test --release -q -p "$1" --test "$2" --no-run --message-format=json 2> /dev/null |
  python3 -c "import json, sys; print([m['executable'] for m in map(json.loads, sys.stdin) if m.get('executable') and m['target']['name'] == sys.argv[1]][0])" "$2"
