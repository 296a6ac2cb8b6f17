"""Writes the `.pth` fixtures of tests/fixtures/transunet-micro with real PyTorch.

Reads a safetensors file of slimseg's baseline (the official TransUNet variable names),
with its JSON header and raw little-endian data parsed by hand, so only torch and numpy
are needed, and saves it as the official trainer does:
`torch.save(model.state_dict(), path)`, an OrderedDict of tensors. It also writes the
variants that the import must handle or refuse:

- `micro.pth`: the state_dict, with one weight stored as a non-contiguous view (a
  transposed copy transposed back), to exercise strides;
- `micro-nested.pth`: `{"epoch": 3, "model": {"module." + name: tensor}}`, the
  DataParallel prefix inside a checkpoint dict, every tensor contiguous (so the strided
  one can be compared with it);
- `micro-unknown-nesting.pth`: `{"epoch": 3, "weights": {...}}`, a dict of tensors under
  a key the import does not know.

    python scripts/make_pth_fixture.py BASELINE.safetensors OUT_DIR

Made for the committed fixture with torch 2.11.0 from
`slimseg train --config tests/fixtures/transunet-micro/config.toml --run R
--synth-train 2 --synth-val 1 --synth-test 1` (R/baseline/best.safetensors).
"""

import collections
import json
import pathlib
import struct
import sys

import numpy as np
import torch

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "F16": np.float16}


def read_safetensors(path: pathlib.Path) -> "collections.OrderedDict[str, torch.Tensor]":
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = collections.OrderedDict()
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        start, end = info["data_offsets"]
        array = np.frombuffer(data[start:end], dtype=DTYPES[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(array.copy())
    return out


def main() -> int:
    src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    sd = read_safetensors(src)
    strided = "transformer.encoder.layer.0.attn.query.weight"
    sd[strided] = sd[strided].t().contiguous().t()
    assert not sd[strided].is_contiguous()
    torch.save(sd, out / "micro.pth")
    nested = {
        "epoch": 3,
        "model": collections.OrderedDict(("module." + k, v.contiguous()) for k, v in sd.items()),
    }
    torch.save(nested, out / "micro-nested.pth")
    torch.save({"epoch": 3, "weights": {"a": torch.zeros(2)}}, out / "micro-unknown-nesting.pth")
    for f in sorted(out.glob("*.pth")):
        print(f, f.stat().st_size, "bytes")
    print(f"{len(sd)} tensors, torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
