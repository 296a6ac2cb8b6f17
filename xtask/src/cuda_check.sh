#!/usr/bin/env bash
# slimseg CUDA check: run on a machine with an NVIDIA GPU and Python torch 2.11 (no Rust
# needed). Packed by `cargo xtask cuda-check`. Usage: bash run.sh OUT_DIR
#
# Runs doctor, a bounded paper-preset training (a three-epoch baseline, then a one-epoch
# search) on a small synthetic cohort at batch 24, the same baseline under bf16 autocast
# (train.amp = "bf16"; the first is the config's amp, fp16 for paper.toml), compress to
# 70% of the MACs, and full vs compressed latency at batch 1, 8 and 24 in fp32 and bf16.
# When packed with
# `--transunet`, it first times the official TransUNet training step on the same GPU
# (train_peer.py: batch 24, AMP fp16, synthetic tensors). Writes OUT_DIR/cuda-check.json
# (and the logs); slimseg's training throughput leaves out the first epoch (CUDA and cuDNN
# start-up), the official one its warm-up steps.
# SLIMSEG_CHECK_PEER_ITERS sets the official step's timed iterations (default 20).
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
# `train` makes the run: its configuration (with these overrides) and the synthetic
# cohort, which the later stages read from the run itself.
run_bf16="$work/run_bf16"
settings=(--config "$config" --device "$device" --set train.batch_size="$batch"
    --set train.epochs=3 --set search.epochs=1 --set train.val_every=0
    --set train.progress=false)
common=("${settings[@]}" --run "$run")
synth=(--synth-train 16 --synth-val 1 --synth-test 1)

"$bin" doctor | tee "$out/doctor.txt"

# Peak GPU memory in MiB as nvidia-smi sees it (the same measure for both trainings),
# sampled into the file $1 while a training runs.
sampler=""
start_sampler() {
    if command -v nvidia-smi > /dev/null; then
        (while true; do
            nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >> "$1" || true
            sleep 0.5
        done) &
        sampler=$!
    fi
}
stop_sampler() {
    if [ -n "$sampler" ]; then kill "$sampler"; sampler=""; fi
}

peer_amp=fp16
if [ "$device" = cpu ]; then peer_amp=off; fi
if [ -f "$here/train_peer.py" ]; then
    start_sampler "$work/memory_peer.txt"
    python3 "$here/train_peer.py" --transunet "$here/TransUNet" --device "$device" \
        --batch "$batch" --iters "${SLIMSEG_CHECK_PEER_ITERS:-20}" --amp "$peer_amp" \
        --json "$out/peer_train.json" 2>&1 | tee "$out/peer_train.log"
    stop_sampler
fi

start_sampler "$work/memory.txt"
"$bin" train "${common[@]}" "${synth[@]}" 2>&1 | tee "$out/train.log"
"$bin" search --run "$run" --device "$device" 2>&1 | tee "$out/search.log"
stop_sampler
start_sampler "$work/memory_bf16.txt"
"$bin" train "${settings[@]}" --run "$run_bf16" --set train.amp=bf16 "${synth[@]}" 2>&1 |
    tee "$out/train_bf16.log"
stop_sampler
"$bin" compress --run "$run" --device "$device" --target-macs 0.7 2>&1 | tee "$out/compress.log"
"$bin" bench --run "$run" --device "$device" --batch "1,8,$batch" --precision fp32,bf16 --json "$out/latency.json" \
    2>&1 | tee "$out/bench.log"

python3 - "$run" "$out" "$work/memory.txt" "$batch" "$work/memory_peer.txt" "$config" \
    "$run_bf16" "$work/memory_bf16.txt" <<'PY'
import json, os, sys
run, out, memory, batch, memory_peer, config, run_bf16, memory_bf16 = sys.argv[1:]
def load(path):
    with open(path) as f:
        return json.load(f)
def peak_of(path):
    if not os.path.exists(path):
        return None
    values = [float(v) for v in open(path).read().split() if v.strip()]
    return max(values) if values else None
peak = peak_of(memory)
def steady(stage, run=run):
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
    "config": os.path.basename(config),
    "doctor": open(os.path.join(out, "doctor.txt")).read().splitlines(),
    "batch_size": int(batch),
    "baseline_slices_per_s_after_first_epoch": steady("baseline"),
    "baseline_training": load(os.path.join(run, "baseline", "metrics.json")),
    "search_training": load(os.path.join(run, "search", "metrics.json")),
    "peak_gpu_memory_mib": peak,
    "bf16_autocast_baseline_slices_per_s_after_first_epoch": steady("baseline", run_bf16),
    "bf16_autocast_baseline_training": load(os.path.join(run_bf16, "baseline", "metrics.json")),
    "bf16_autocast_peak_gpu_memory_mib": peak_of(memory_bf16),
    "latency": load(os.path.join(out, "latency.json")),
}
peer = os.path.join(out, "peer_train.json")
if os.path.exists(peer):
    p = load(peer)
    ours = result["baseline_slices_per_s_after_first_epoch"]
    result["official_training_step"] = p
    result["official_peak_gpu_memory_mib"] = peak_of(memory_peer)
    # The official step is always the paper model: a ratio only against the paper preset.
    same = os.path.basename(config) == "paper.toml"
    result["slimseg_over_official_slices_per_s"] = ours / p["slices_per_s"] if ours and same else None
with open(os.path.join(out, "cuda-check.json"), "w") as f:
    json.dump(result, f, indent=2)
print("wrote", os.path.join(out, "cuda-check.json"))
PY
