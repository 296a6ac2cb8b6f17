#!/usr/bin/env python3
"""Write numpy_savez.npz the way `numpy.savez` does (zip, stored, every entry forced to
zip64 as numpy has done since gh-10776), without needing numpy: .npy v1.0 headers are
written by hand. Keys use the slash scheme of R50+ViT-B_16.npz. Run from this folder."""
import struct
import zipfile


def npy(descr, shape, payload):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, "".join(f"{d}," if len(shape) == 1 else f"{d}, " for d in shape).rstrip(", ") + ("," if len(shape) == 1 else ""))
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload


entries = {
    # (1, 1, 2, 3) HWIO kernel with values 0..5
    "embedding/kernel": npy("<f4", (1, 1, 2, 3), struct.pack("<6f", *range(6))),
    "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/bias": npy("<f4", (2, 2), struct.pack("<4f", 0.5, -1.0, 2.0, 3.5)),
    # float64 scalar-ish vector, as some exports store
    "gn_root/scale": npy("<f8", (3,), struct.pack("<3d", 1.0, 2.0, 3.0)),
}
with zipfile.ZipFile("numpy_savez.npz", mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
    for key, data in entries.items():
        with z.open(key + ".npy", "w", force_zip64=True) as f:
            f.write(data)
print("numpy_savez.npz written")
