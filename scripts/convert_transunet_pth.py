#!/usr/bin/env python3
"""Convert an official TransUNet PyTorch checkpoint (.pth) to safetensors for slimseg.

`slimseg import --transunet CKPT.pth --run RUN` reads such files directly, without
Python; this script remains for other tools that want safetensors.

The official code (github.com/Beckschen/TransUNet) saves `model.state_dict()`, possibly
of an `nn.DataParallel` wrapper (keys prefixed `module.`). slimseg's model uses the same
variable names, so the conversion only unwraps the dictionary and writes the tensors:

    python scripts/convert_transunet_pth.py epoch_149.pth transunet.safetensors

then load with `slimseg_model::weights::load_official_state_dict`, which strips
`module.`, ignores `*.num_batches_tracked` and checks every name and shape strictly.

Needs `torch` and `safetensors` (pip install torch safetensors). Not run in CI.
"""

import argparse
import os
import sys
import tempfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pth", help="official checkpoint (.pth, a state_dict or a dict holding one)")
    parser.add_argument("out", help="output .safetensors file")
    parser.add_argument("--key", default=None, help="dictionary key holding the state_dict (default: auto)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    obj = torch.load(args.pth, map_location="cpu", weights_only=False)
    if args.key is not None:
        obj = obj[args.key]
    elif isinstance(obj, dict) and not all(torch.is_tensor(v) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        else:
            print(f"{args.pth}: no state_dict found; keys: {list(obj)[:20]}", file=sys.stderr)
            return 1
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()

    tensors = {}
    for name, value in obj.items():
        if not torch.is_tensor(value):
            print(f"{args.pth}: entry {name!r} is not a tensor ({type(value).__name__})", file=sys.stderr)
            return 1
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        tensors[name] = value.contiguous()

    params = sum(v.numel() for k, v in tensors.items() if v.is_floating_point() and "running_" not in k)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.replace(tmp, args.out)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"{args.out}: {len(tensors)} tensors, {params:,} parameters "
          f"(official R50-ViT-B/16 with 4 classes: 105,276,356)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
