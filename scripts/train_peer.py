#!/usr/bin/env python3
"""The official TransUNet training step, timed on synthetic tensors: the PyTorch side of
the GPU side-by-side (`cargo xtask cuda-check --transunet PATH` packs it with the code).

Usage (torch 2.11; the official code from github.com/Beckschen/TransUNet):

    python3 scripts/train_peer.py --transunet PATH/TO/TransUNet [--device cuda] \
        [--batch 24] [--warmup 5] [--iters 20] [--amp fp16|bf16|off] [--json OUT.json]

It builds the official `VisionTransformer` (R50-ViT-B_16, 224x224, 4 classes, 3 skips)
and runs the inner loop of the official `trainer_synapse`: SGD (lr 0.01, momentum 0.9,
weight decay 1e-4), loss 0.5 cross-entropy + 0.5 soft Dice over the 4 classes (the
official `DiceLoss` formula, smooth 1e-5, restated here because the official `utils.py`
imports medpy and SimpleITK), the poly learning rate; with `--amp` under autocast (fp16
with a gradient scaler, or bf16). Inputs and labels are random tensors made once on the
device, so the data pipeline is not timed. It prints and writes the steady-state slices/s
over `--iters` steps after `--warmup` and the peak CUDA memory. Where `ml_collections` or
scipy are not installed (a bare torch install), small stand-ins replace what the official
model code uses of them at import (a config dict; scipy only serves weight loading).
"""

import argparse
import json
import sys
import time
import types


def stand_ins():
    try:
        import ml_collections  # noqa: F401
    except ImportError:
        class ConfigDict(dict):
            __getattr__ = dict.__getitem__

            def __setattr__(self, k, v):
                self[k] = v

        sys.modules["ml_collections"] = types.SimpleNamespace(ConfigDict=ConfigDict)
    try:
        import scipy.ndimage  # noqa: F401
    except ImportError:
        def zoom(*_a, **_k):
            raise RuntimeError("scipy is needed to load pretrained weights")

        nd = types.ModuleType("scipy.ndimage")
        nd.zoom = zoom
        sp = types.ModuleType("scipy")
        sp.ndimage = nd
        sys.modules["scipy"], sys.modules["scipy.ndimage"] = sp, nd


def dice_loss(logits, labels, classes):
    import torch

    probs = torch.softmax(logits, dim=1)
    loss = 0.0
    for c in range(classes):
        p, t = probs[:, c], (labels == c).float()
        inter = (p * t).sum()
        loss = loss + 1 - (2 * inter + 1e-5) / ((p * p).sum() + (t * t).sum() + 1e-5)
    return loss / classes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--transunet", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--amp", choices=["fp16", "bf16", "off"], default="fp16")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--json")
    a = ap.parse_args()
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    stand_ins()
    sys.path.insert(0, a.transunet)
    from networks.vit_seg_modeling import CONFIGS, VisionTransformer

    dev = torch.device(a.device)
    cfg = CONFIGS["R50-ViT-B_16"]
    cfg.n_classes, cfg.n_skip = 4, 3
    cfg.patches.grid = (14, 14)
    torch.manual_seed(0)
    model = VisionTransformer(cfg, img_size=224, num_classes=4).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    ce = torch.nn.CrossEntropyLoss()
    x = torch.randn(a.batch, 1, 224, 224, device=dev)
    y = torch.randint(0, 4, (a.batch, 224, 224), device=dev)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(a.amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=a.amp == "fp16")
    total = a.warmup + a.iters

    def step(i):
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            out = model(x)
            loss = 0.5 * ce(out, y) + 0.5 * dice_loss(out, y, 4)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        for g in opt.param_groups:
            g["lr"] = 0.01 * (1.0 - i / total) ** 0.9
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for i in range(a.warmup):
        step(i)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for i in range(a.warmup, total):
        loss = step(i)
    sync()
    seconds = time.perf_counter() - t
    result = {
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "torch": torch.__version__,
        "batch": a.batch,
        "amp": a.amp,
        "iters": a.iters,
        "seconds": seconds,
        "slices_per_s": a.batch * a.iters / seconds,
        "peak_memory_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "final_loss": loss.item(),
    }
    print(json.dumps(result))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
