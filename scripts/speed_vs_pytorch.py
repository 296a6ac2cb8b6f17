#!/usr/bin/env python3
"""slimseg's forward pass against the official TransUNet code in PyTorch eager, side by side.

Usage (needs torch 2.11, numpy, scipy and ml_collections, which the official code imports,
and a checkout of github.com/Beckschen/TransUNet):

    cargo build --release -p slimseg-model --example peer_timer
    python3 scripts/speed_vs_pytorch.py --transunet PATH/TO/TransUNet \
        [--batch 1] [--threads 2] [--rounds 6] [--per-round 3] [--bf16] [--json OUT.json]

The official `VisionTransformer` (R50-ViT-B_16, 224x224 input, 4 classes, 3 skips: the
paper preset) runs in this process in eval mode under `torch.inference_mode()`; slimseg's
paper preset runs in `peer_timer` processes, one per mode: `plain` (as it trains), `exact`
(prepared for inference, no fast paths) and `fast` (as `slimseg predict` runs it), and with
`--bf16` also slimseg in bf16 and PyTorch under bf16 autocast. Each contender is warmed up,
then the rounds interleave them (the order rotates every round), `--per-round` forwards
each, so that drift of the machine touches all alike; only one computes at a time. Weights
are random (speed does not depend on their values). The script prints the median time of
each and its speed-up over PyTorch eager fp32; it checks that slimseg runs on the same
libtorch version as this torch. Not run in CI.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def official_model(repo, threads):
    import torch

    sys.path.insert(0, repo)
    from networks.vit_seg_modeling import CONFIGS, VisionTransformer

    torch.set_num_threads(threads)
    cfg = CONFIGS["R50-ViT-B_16"]
    cfg.n_classes = 4
    cfg.n_skip = 3
    cfg.patches.grid = (14, 14)  # 224 / 16, as the official train.py sets it
    torch.manual_seed(0)
    return VisionTransformer(cfg, img_size=224, num_classes=4).eval()


class Python:
    def __init__(self, name, model, batch, autocast):
        import torch

        self.name, self.model, self.autocast = name, model, autocast
        self.x = torch.randn(batch, 1, 224, 224)

    def run(self, n):
        import torch

        out = []
        with torch.inference_mode():
            for _ in range(n):
                t = time.perf_counter()
                if self.autocast:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        self.model(self.x)
                else:
                    self.model(self.x)
                out.append(1e3 * (time.perf_counter() - t))
        return out


class Slimseg:
    def __init__(self, name, exe, args):
        self.name = name
        self.proc = subprocess.Popen([exe] + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline().split()
        if ready[:2] != ["ready", "libtorch"]:
            sys.exit(f"{exe}: unexpected first line {ready}")
        self.libtorch = ready[2]

    def run(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return [float(v) for v in self.proc.stdout.readline().split()]

    def close(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transunet", required=True, help="checkout of Beckschen/TransUNet")
    ap.add_argument("--exe", default="target/release/examples/peer_timer")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=3)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.transunet, "networks", "vit_seg_modeling.py")):
        sys.exit(f"{a.transunet}: not a TransUNet checkout (no networks/vit_seg_modeling.py)")
    if not os.access(a.exe, os.X_OK):
        sys.exit(f"{a.exe}: not built; run `cargo build --release -p slimseg-model --example peer_timer`")
    import torch

    model = official_model(a.transunet, a.threads)
    common = ["--preset", "paper", "--batch", str(a.batch), "--threads", str(a.threads),
              "--warmup", str(a.warmup)]
    contenders = [Python("PyTorch eager fp32 (official code)", model, a.batch, False)]
    modes = [("plain", "fp32"), ("exact", "fp32"), ("fast", "fp32")] + ([("fast", "bf16")] if a.bf16 else [])
    for mode, prec in modes:
        contenders.append(Slimseg(f"slimseg {mode} {prec}", a.exe, common + ["--mode", mode, "--precision", prec]))
    if a.bf16:
        contenders.append(Python("PyTorch eager bf16 autocast", model, a.batch, True))
    ours = {c.libtorch for c in contenders if isinstance(c, Slimseg)}
    theirs = torch.__version__.split("+")[0]
    if any(v.split("+")[0] != theirs for v in ours):
        sys.exit(f"slimseg runs on libtorch {ours}, this torch is {torch.__version__}: not the same")
    for c in contenders:
        if isinstance(c, Python):
            c.run(a.warmup)
    times = {c.name: [] for c in contenders}
    for r in range(a.rounds):
        for k in range(len(contenders)):
            c = contenders[(k + r) % len(contenders)]
            times[c.name] += c.run(a.per_round)
    for c in contenders:
        if isinstance(c, Slimseg):
            c.close()
    base = statistics.median(times[contenders[0].name])
    print(f"paper preset, batch {a.batch}, {a.threads} threads, torch {torch.__version__}, "
          f"{a.rounds} rounds x {a.per_round} forwards, interleaved")
    rows = []
    for c in contenders:
        t = times[c.name]
        med = statistics.median(t)
        rows.append({"name": c.name, "median_ms": med, "min_ms": min(t), "max_ms": max(t),
                     "speedup_vs_pytorch_eager": base / med, "samples_ms": t})
        print(f"  {c.name:<36} {med:8.1f} ms  ({min(t):.1f}-{max(t):.1f})  {base / med:5.2f}x PyTorch eager")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"batch": a.batch, "threads": a.threads, "torch": torch.__version__,
                       "rounds": a.rounds, "per_round": a.per_round, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
