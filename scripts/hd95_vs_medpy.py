"""HD95: slimseg against medpy, side by side in one run, on the same masks.

Runs the Rust example `hd95_peer` (which writes the mask pairs and prints slimseg's
HD95 and median time per pair), then times medpy's `binary.hd95` on the same files
and prints, per pair, both values, their difference and the speed ratio.

    python -m venv /tmp/medpy && /tmp/medpy/bin/pip install numpy scipy medpy
    cargo build --release -p slimseg-data --example hd95_peer
    /tmp/medpy/bin/python scripts/hd95_vs_medpy.py [--repeats 7]
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from medpy.metric import binary

SPACING = (10.0, 1.5, 1.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--bin",
        default=str(Path(__file__).resolve().parent.parent / "target/release/examples/hd95_peer"),
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [args.bin, tmp, str(args.repeats)], check=True, capture_output=True, text=True
        ).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        print(f"| case | slimseg HD95 | medpy HD95 | abs diff | slimseg ms | medpy ms | speed-up |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        worst = 0.0
        for r in rows:
            shape = tuple(r["shape"])
            load = lambda s: np.fromfile(Path(tmp) / f"{r['case']}_{s}.u8", dtype=np.uint8).reshape(shape).astype(bool)
            pred, gt = load("pred"), load("gt")
            value = binary.hd95(pred, gt, voxelspacing=SPACING)
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                binary.hd95(pred, gt, voxelspacing=SPACING)
                times.append(time.perf_counter() - t)
            med = sorted(times)[len(times) // 2]
            diff = abs(value - r["hd95"])
            worst = max(worst, diff)
            print(
                f"| {r['case']} | {r['hd95']:.12g} | {value:.12g} | {diff:.1e} | "
                f"{1e3 * r['median_s']:.2f} | {1e3 * med:.1f} | {med / r['median_s']:.1f}x |"
            )
        print(f"\nlargest |slimseg - medpy|: {worst:.1e}")


if __name__ == "__main__":
    main()
