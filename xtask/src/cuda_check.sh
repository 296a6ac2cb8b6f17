#!/usr/bin/env bash
# slimseg CUDA check: run on a machine with an NVIDIA GPU and Python torch 2.11 (no Rust
# needed). Packed by `cargo xtask cuda-check`. Usage: bash run.sh OUT_DIR
#
# Runs doctor, a bounded paper-preset training (a three-epoch baseline, then a one-epoch
# search) on a small synthetic cohort at batch 24, compress to 70% of the MACs, and full
# vs compressed latency at batch 1 and 8. Writes OUT_DIR/cuda-check.json (and the logs);
# its training throughput leaves out the first epoch (CUDA and cuDNN start-up).
# SLIMSEG_CHECK_CONFIG / SLIMSEG_CHECK_DEVICE / SLIMSEG_CHECK_BATCH override the config
# (default configs/paper.toml), the device (cuda) and the batch (24) for a dry run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/out}" && cd "${1:-$here/out}" && pwd)
work=$(mktemp -d)
config=${SLIMSEG_CHECK_CONFIG:-$here/configs/paper.toml}
device=${SLIMSEG_CHECK_DEVICE:-cuda}
batch=${SLIMSEG_CHECK_BATCH:-24}
if torch_dir=$(python3 -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null); then
    export LD_LIBRARY_PATH="$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
bin="$here/slimseg"
run="$work/run"
# The same overrides for every stage: a stage's folder records the configuration it was
# made with, and later stages refuse a different one.
common=(--config "$config" --run "$run" --device "$device" --synth-train 16 --synth-val 1
    --synth-test 1 --set train.batch_size="$batch" --set train.epochs=3 --set search.epochs=1
    --set train.val_every=0 --set train.progress=false)

"$bin" doctor | tee "$out/doctor.txt"

# Peak GPU memory in MiB, sampled while training runs.
sampler=""
if command -v nvidia-smi > /dev/null; then
    (while true; do
        nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$work/memory.txt" || true
        sleep 0.5
    done) &
    sampler=$!
fi
"$bin" train "${common[@]}" 2>&1 | tee "$out/train.log"
"$bin" search "${common[@]}" 2>&1 | tee "$out/search.log"
if [ -n "$sampler" ]; then kill "$sampler"; fi
"$bin" compress "${common[@]}" --target-macs 0.7 2>&1 | tee "$out/compress.log"
"$bin" bench "${common[@]}" --batch 1,8 --json "$out/latency.json" 2>&1 | tee "$out/bench.log"

python3 - "$run" "$out" "$work/memory.txt" "$batch" <<'PY'
import json, os, sys
run, out, memory, batch = sys.argv[1:]
def load(path):
    with open(path) as f:
        return json.load(f)
peak = None
if os.path.exists(memory):
    values = [float(v) for v in open(memory).read().split() if v.strip()]
    peak = max(values) if values else None
def steady(stage):
    """Slices/s over the epochs after the first (which pays for the start-up)."""
    with open(os.path.join(run, stage, "log.csv")) as f:
        header = f.readline().strip().split(",")
        rows = [dict(zip(header, line.strip().split(","))) for line in f if line.strip()]
    rows = rows[1:]
    if not rows:
        return None
    seconds = sum(float(r["seconds"]) for r in rows)
    slices = sum(float(r["slices_per_s"]) * float(r["seconds"]) for r in rows)
    return slices / seconds if seconds > 0 else None
result = {
    "doctor": open(os.path.join(out, "doctor.txt")).read().splitlines(),
    "batch_size": int(batch),
    "baseline_slices_per_s_after_first_epoch": steady("baseline"),
    "baseline_training": load(os.path.join(run, "baseline", "metrics.json")),
    "search_training": load(os.path.join(run, "search", "metrics.json")),
    "peak_gpu_memory_mib": peak,
    "latency": load(os.path.join(out, "latency.json")),
}
with open(os.path.join(out, "cuda-check.json"), "w") as f:
    json.dump(result, f, indent=2)
print("wrote", os.path.join(out, "cuda-check.json"))
PY
