#!/usr/bin/env python3
"""Compare slimseg's TransUNet with an independent PyTorch statement of the official one.

Usage (needs torch; scipy for the resize checks):

    cargo run -p slimseg-model --example dump_reference -- reference.safetensors
    python3 scripts/check_against_pytorch.py reference.safetensors

The file holds the `tiny` model's weights under the official state_dict names, an input
batch and slimseg's logits in eval and train mode. This script builds the TransUNet
module tree of github.com/Beckschen/TransUNet (vit_seg_modeling.py,
vit_seg_modeling_resnet_skip.py) with the tiny widths, loads the weights with
`load_state_dict` (only `num_batches_tracked` may be missing), runs the same input and
reports the largest differences. It also compares the position-embedding resize with
`scipy.ndimage.zoom(order=1)` and the bicubic slice resize with `zoom(order=3)`.
Exit status 1 when the model outputs differ by more than 1e-4. Not run in CI.
"""

import json
import math
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# tiny preset (crates/model/src/config.rs); dropout 0 as in the dump.
CFG = dict(img=96, classes=4, resnet_layers=(2, 2, 3), width=8, groups=4, hidden=192, layers=4,
           heads=6, mlp=768, head_channels=64, decoder=(32, 16, 8, 8), n_skip=3)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


class StdConv2d(nn.Conv2d):
    def forward(self, x):
        v, m = torch.var_mean(self.weight, dim=[1, 2, 3], keepdim=True, unbiased=False)
        w = (self.weight - m) / torch.sqrt(v + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PreActBottleneck(nn.Module):
    def __init__(self, cin, cout, cmid, stride, g):
        super().__init__()
        self.gn1 = nn.GroupNorm(g, cmid, eps=1e-6)
        self.conv1 = StdConv2d(cin, cmid, 1, bias=False)
        self.gn2 = nn.GroupNorm(g, cmid, eps=1e-6)
        self.conv2 = StdConv2d(cmid, cmid, 3, stride=stride, padding=1, bias=False)
        self.gn3 = nn.GroupNorm(g, cout, eps=1e-6)
        self.conv3 = StdConv2d(cmid, cout, 1, bias=False)
        if stride != 1 or cin != cout:
            self.downsample = StdConv2d(cin, cout, 1, stride=stride, bias=False)
            self.gn_proj = nn.GroupNorm(cout, cout)

    def forward(self, x):
        residual = self.gn_proj(self.downsample(x)) if hasattr(self, "downsample") else x
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return F.relu(residual + y)


class ResNetV2(nn.Module):
    def __init__(self, layers, w, g):
        super().__init__()
        self.root = nn.Sequential()
        self.root.add_module("conv", StdConv2d(3, w, 7, stride=2, padding=3, bias=False))
        self.root.add_module("gn", nn.GroupNorm(g, w, eps=1e-6))
        self.root.add_module("relu", nn.ReLU())
        self.body = nn.Sequential()
        plan = [(w, w * 4, w, 1), (w * 4, w * 8, w * 2, 2), (w * 8, w * 16, w * 4, 2)]
        for s, ((cin, cout, cmid, stride), units) in enumerate(zip(plan, layers)):
            block = nn.Sequential()
            block.add_module("unit1", PreActBottleneck(cin, cout, cmid, stride, g))
            for u in range(2, units + 1):
                block.add_module(f"unit{u}", PreActBottleneck(cout, cout, cmid, 1, g))
            self.body.add_module(f"block{s + 1}", block)

    def forward(self, x):
        b, _, size, _ = x.shape
        features = []
        x = self.root(x)
        features.append(x)
        x = F.max_pool2d(x, 3, 2, 0)
        for i in range(len(self.body) - 1):
            x = self.body[i](x)
            right = int(size / 4 / (i + 1))
            if x.shape[2] != right:
                feat = torch.zeros((b, x.shape[1], right, right), dtype=x.dtype)
                feat[:, :, : x.shape[2], : x.shape[3]] = x
            else:
                feat = x
            features.append(feat)
        return self.body[-1](x), features[::-1]


class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h, self.dh = h, c // h
        self.query, self.key, self.value, self.out = (nn.Linear(c, c) for _ in range(4))

    def forward(self, x):
        b, n, c = x.shape
        split = lambda t: t.view(b, n, self.h, self.dh).permute(0, 2, 1, 3)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)
        return self.out((p @ v).permute(0, 2, 1, 3).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, c, m):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, m), nn.Linear(m, c)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, c, h, m):
        super().__init__()
        self.attention_norm = nn.LayerNorm(c, eps=1e-6)
        self.ffn_norm = nn.LayerNorm(c, eps=1e-6)
        self.ffn = Mlp(c, m)
        self.attn = Attention(c, h)

    def forward(self, x):
        x = x + self.attn(self.attention_norm(x))
        return x + self.ffn(self.ffn_norm(x))


class Conv2dReLU(nn.Sequential):
    def __init__(self, cin, cout, k, p):
        super().__init__(nn.Conv2d(cin, cout, k, padding=p, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class DecoderBlock(nn.Module):
    def __init__(self, cin, cout, skip):
        super().__init__()
        self.conv1 = Conv2dReLU(cin + skip, cout, 3, 1)
        self.conv2 = Conv2dReLU(cout, cout, 3, 1)

    def forward(self, x, skip):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class TransUNet(nn.Module):
    def __init__(self, c=CFG):
        super().__init__()
        w, hid = c["width"], c["hidden"]
        n = (c["img"] // 16) ** 2
        self.transformer = nn.Module()
        emb = self.transformer.embeddings = nn.Module()
        emb.hybrid_model = ResNetV2(c["resnet_layers"], w, c["groups"])
        emb.patch_embeddings = nn.Conv2d(w * 16, hid, 1)
        emb.position_embeddings = nn.Parameter(torch.zeros(1, n, hid))
        enc = self.transformer.encoder = nn.Module()
        enc.layer = nn.ModuleList(Block(hid, c["heads"], c["mlp"]) for _ in range(c["layers"]))
        enc.encoder_norm = nn.LayerNorm(hid, eps=1e-6)
        self.decoder = nn.Module()
        self.decoder.conv_more = Conv2dReLU(hid, c["head_channels"], 3, 1)
        skips = [w * 8, w * 4, w, 0]
        for i in range(c["n_skip"], 4):
            skips[i] = 0
        ins = [c["head_channels"]] + list(c["decoder"][:-1])
        self.decoder.blocks = nn.ModuleList(DecoderBlock(i, o, s) for i, o, s in zip(ins, c["decoder"], skips))
        self.segmentation_head = nn.Sequential(nn.Conv2d(c["decoder"][-1], c["classes"], 3, padding=1), nn.Identity())
        self.n_skip = c["n_skip"]

    def forward(self, x):
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        emb = self.transformer.embeddings
        x, features = emb.hybrid_model(x)
        x = emb.patch_embeddings(x).flatten(2).transpose(-1, -2) + emb.position_embeddings
        for blk in self.transformer.encoder.layer:
            x = blk(x)
        x = self.transformer.encoder.encoder_norm(x)
        b, n, hid = x.shape
        g = int(math.sqrt(n))
        x = self.decoder.conv_more(x.permute(0, 2, 1).contiguous().view(b, hid, g, g))
        for i, blk in enumerate(self.decoder.blocks):
            x = blk(x, features[i] if i < self.n_skip else None)
        return self.segmentation_head(x)


def main():
    data = read_safetensors(sys.argv[1])
    weights = {k: v for k, v in data.items() if not k.startswith("__")}
    model = TransUNet()
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    print(f"state_dict: {len(weights)} tensors loaded; missing {missing}; unexpected {unexpected}")
    ok = not missing and not unexpected
    ref_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {ref_params:,}")
    x = data["__input"]
    with torch.no_grad():
        model.eval()
        d_eval = (model(x) - data["__logits_eval"]).abs().max().item()
        model.train()
        d_train = (model(x) - data["__logits_train"]).abs().max().item()
    scale = data["__logits_eval"].abs().max().item()
    print(f"logits eval: max |diff| {d_eval:.3g} (max |logit| {scale:.3g}); train: {d_train:.3g}")
    ok = ok and d_eval < 1e-4 and d_train < 1e-4
    try:
        from scipy import ndimage
        old = data["__posemb_old"][0, 1:].numpy()
        gs = int(math.sqrt(old.shape[0]))
        zoomed = ndimage.zoom(old.reshape(gs, gs, -1), (7 / gs, 7 / gs, 1), order=1).reshape(1, 49, -1)
        print(f"position embeddings vs scipy zoom(order=1): max |diff| {abs(zoomed - data['__posemb_new'].numpy()).max():.3g}")
        img = data["__img"][0, 0].numpy()
        z3 = ndimage.zoom(img, (96 / img.shape[0], 96 / img.shape[1]), order=3)
        ours = data["__img_resized"][0, 0].numpy()
        print(f"slice resize vs scipy zoom(order=3): max |diff| {abs(z3 - ours).max():.3g}, "
              f"mean |diff| {abs(z3 - ours).mean():.3g} (image std {img.std():.3g})")
    except ImportError:
        print("scipy not available: resize checks skipped")
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
