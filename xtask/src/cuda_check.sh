#!/usr/bin/env bash
# slimseg CUDA check: run on a machine with an NVIDIA GPU and Python torch 2.11 (no Rust
# needed). Packed by `cargo xtask cuda-check`. Usage: bash run.sh OUT_DIR
# Writes OUT_DIR/doctor.txt and OUT_DIR/cuda-check.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/out}" && cd "${1:-$here/out}" && pwd)
work=$(mktemp -d)
torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
bin="$here/slimseg"

"$bin" doctor | tee "$out/doctor.txt"
