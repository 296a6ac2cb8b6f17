"""Checks a module exported by `slimseg export` with PyTorch itself.

Loads DIR/manifest.json, the TorchScript module it names (torch.jit.load) and the example
input and slimseg's logits for it (.npy), runs the module on the whole example batch and
on its first image alone, and prints the largest absolute differences. Exits 1 when one
is above the tolerance (default 1e-5).

    python scripts/check_torchscript.py EXPORT_DIR [--tolerance 1e-5]

Needs torch (2.11, as slimseg's libtorch) and numpy.
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=pathlib.Path, help="export folder (holds manifest.json)")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()
    manifest = json.loads((args.dir / "manifest.json").read_text())
    module = torch.jit.load(str(args.dir / manifest["module"]), map_location="cpu")
    module.eval()
    x = np.load(args.dir / "example_input.npy")
    want = np.load(args.dir / "example_logits.npy")
    worst = 0.0
    with torch.no_grad():
        for name, batch in [("whole batch", slice(None)), ("first image", slice(0, 1))]:
            got = module(torch.from_numpy(x[batch])).numpy()
            if got.shape != want[batch].shape:
                print(f"{name}: shape {got.shape}, slimseg {want[batch].shape}")
                return 1
            diff = float(np.abs(got - want[batch]).max())
            worst = max(worst, diff)
            print(f"{name}: input {list(x[batch].shape)} -> logits {list(got.shape)}, "
                  f"max |torch - slimseg| = {diff:.3e}")
    print(f"torch {torch.__version__}, stage {manifest['stage']}, "
          f"fingerprint {manifest['fingerprint']}: "
          + ("same numbers" if worst <= args.tolerance else f"differs by {worst:.3e}"))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
