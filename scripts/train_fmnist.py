#!/usr/bin/env python3
"""Train the Fashion-MNIST test models in testdata/ and export them to ONNX.

Reads Fashion-MNIST straight from the IDX files of Debian's dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist), trains on CPU with fixed seeds, exports ONNX
(input "input" [N,1,28,28] float32, output "logits" [N,10], dynamic batch) and records
the measured accuracy in <out>/models.json. Also writes <out>/fmnist_sample/, the first
500 test images as PNG and .npy, so tests run without the Debian dataset.

Preprocessing (identical for training and evaluation):
    x = pixel / 255;  x = (x - 0.2860) / 0.3530        (layout NCHW, 1 gray channel)

BatchNorm stays in the graph: the model is put in eval mode and exported with
TrainingMode.PRESERVE, which skips the exporter's Conv+BN folding; every exported
BatchNormalization has exactly one output (inference form).

Examples:
    python3 scripts/train_fmnist.py --model all --out testdata/
    python3 scripts/train_fmnist.py --model lenet5 --epochs 3 --out /tmp/x
    python3 scripts/train_fmnist.py --model mnv2 --bench 20      # seconds per batch only
"""
import argparse
import gzip
import json
import os
import shlex
import struct
import sys
import time
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import onnx

DATA_DIR = "/usr/share/datasets/fashion-mnist"
SCALE = 1.0 / 255.0
MEAN = 0.2860
STD = 0.3530
NUM_SAMPLES = 500
MODELS = ["lenet300", "lenet5", "resnet", "mnv2", "tinyformer"]

# Per-model training recipe: epochs, optimizer, peak learning rate, weight decay,
# augmentation (random crop with 2-pixel zero padding + horizontal flip) and opset.
RECIPES = {
    "lenet300":   dict(epochs=6,  opt="adam",  lr=1e-3, wd=0.0,  augment=False, opset=13),
    "lenet5":     dict(epochs=6,  opt="adam",  lr=2e-3, wd=0.0,  augment=False, opset=13),
    "resnet":     dict(epochs=8,  opt="sgd",   lr=0.1,  wd=5e-4, augment=True,  opset=13,
                       channels_last=True),
    "mnv2":       dict(epochs=10, opt="sgd",   lr=0.1,  wd=1e-4, augment=True,  opset=13,
                       channels_last=True),
    "tinyformer": dict(epochs=8,  opt="adamw", lr=2e-3, wd=0.05, augment=False, opset=17),
}
FILES = {m: f"{m}_fmnist.onnx" for m in MODELS}
BATCH = 128


# ----------------------------------------------------------------------------- data

def read_idx(path):
    """Parse an IDX file (gzip) into a numpy array (uint8 payload)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: payload size {arr.size} != {dims}")
    return arr.reshape(dims)


def load_split(split):
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    return images.reshape(-1, 1, 28, 28), labels.astype(np.int64)


def preprocess(images_u8):
    x = torch.from_numpy(images_u8.astype(np.float32)) * np.float32(SCALE)
    return (x - MEAN) / STD


def augment(x, gen):
    """Random crop 28x28 out of the 2-pixel padded image, then random horizontal flip, as
    one gather. Padding uses the normalized value of a black pixel (the background)."""
    n = x.shape[0]
    padded = F.pad(x[:, 0], (2, 2, 2, 2), value=(0.0 - MEAN) / STD)     # [n,32,32]
    offs = torch.randint(0, 5, (n, 2), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    ar = torch.arange(28)
    rows = offs[:, :1] + ar                                             # [n,28]
    cols = offs[:, 1:] + torch.where(flip[:, None], 27 - ar, ar)        # [n,28]
    out = padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out.unsqueeze(1).contiguous()


# ----------------------------------------------------------------------------- models

class LeNet300(nn.Module):
    """MLP 784-300-100-10; the [N,1,28,28] input is flattened inside the model."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """conv5x5(6, pad 2) - relu - maxpool - conv5x5(16) - relu - maxpool - 120 - 84 - 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # 28 -> 14
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # 10 -> 5
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class SmallResNet(nn.Module):
    """CIFAR-style ResNet: stem 3x3/16, 3 stages of BasicBlocks at 16/32/64 channels
    (28x28, 14x14, 7x7), 2 blocks per stage (ResNet-14); the stride-2 blocks use a 1x1 conv
    + BN projection shortcut, the others an identity shortcut."""

    def __init__(self, blocks_per_stage=1, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for s, w in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if (s > 0 and b == 0) else 1
                layers.append(BasicBlock(cin, w, stride))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(self.stem(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


def mobilenet_v2_fmnist():
    """torchvision MobileNetV2 (width 0.5, 10 classes) adapted to 1x28x28 input: the first
    conv takes 1 channel at stride 1 instead of 2, so the stride-2 stages take the map
    28 -> 14 -> 7 -> 4 -> 2 and the last feature map is 2x2 (not 1x1)."""
    m = torchvision.models.mobilenet_v2(weights=None, width_mult=0.5, num_classes=10)
    first = m.features[0][0]
    m.features[0][0] = nn.Conv2d(1, first.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(m.features[0][0].weight, mode="fan_out")
    return m


class EncoderBlock(nn.Module):
    """Pre-LN transformer block with hand-written multi-head attention (MatMul, Softmax)."""

    def __init__(self, d, heads, mlp, tokens):
        super().__init__()
        # Shapes are plain ints so the export has constant Reshape targets, no Shape ops.
        self.t, self.d, self.heads, self.dh = tokens, d, heads, d // heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, mlp)
        self.fc2 = nn.Linear(mlp, d)

    def forward(self, x):                                    # x: [N, T, d]
        t, d = self.t, self.d
        h = self.ln1(x)
        qkv = self.qkv(h).reshape(-1, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                     # [N, H, T, dh]
        att = torch.matmul(q, k.transpose(-2, -1)) * (self.dh ** -0.5)
        att = torch.softmax(att, dim=-1)
        h = torch.matmul(att, v).transpose(1, 2).reshape(-1, t, d)
        x = x + self.proj(h)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x


class TinyFormer(nn.Module):
    """7x7 patches (16 tokens) -> linear embedding (stride-7 conv) to d=64 + learned
    position embedding -> 2 encoder blocks (4 heads, MLP 128, GELU) -> LayerNorm ->
    mean over tokens -> linear head."""

    def __init__(self, d=64, depth=2, heads=4, mlp=128, patch=7):
        super().__init__()
        self.d, self.t = d, (28 // patch) ** 2
        self.embed = nn.Conv2d(1, d, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, self.t, d))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(d, heads, mlp, self.t) for _ in range(depth)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, x):
        x = self.embed(x).reshape(-1, self.d, self.t).transpose(1, 2) + self.pos  # [N,16,d]
        x = self.ln(self.blocks(x))
        return self.head(x.mean(dim=1))


def build(name):
    if name == "lenet300":
        return LeNet300()
    if name == "lenet5":
        return LeNet5()
    if name == "resnet":
        return SmallResNet(blocks_per_stage=2)
    if name == "mnv2":
        return mobilenet_v2_fmnist()
    if name == "tinyformer":
        return TinyFormer()
    raise ValueError(name)


# ----------------------------------------------------------------------------- train / eval

def make_optimizer(model, recipe, steps):
    if recipe["opt"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=0.9,
                              nesterov=True, weight_decay=recipe["wd"])
    elif recipe["opt"] == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["wd"])
    else:
        opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["wd"])
    # One-cycle: short linear warm-up then cosine decay, stepped every batch.
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe["lr"], total_steps=steps,
                                                pct_start=0.15, anneal_strategy="cos",
                                                div_factor=10.0, final_div_factor=100.0)
    return opt, sched


def train(model, recipe, xtr, ytr, epochs, seed, max_batches=None):
    gen = torch.Generator().manual_seed(seed)
    n = xtr.shape[0]
    per_epoch = (n + BATCH - 1) // BATCH
    if max_batches:
        per_epoch = min(per_epoch, max_batches)
    opt, sched = make_optimizer(model, recipe, max(1, epochs * per_epoch))
    cl = recipe.get("channels_last", False)
    if cl:
        model.to(memory_format=torch.channels_last)
    model.train()
    t0 = time.time()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total, correct, loss_sum, te = 0, 0, 0.0, time.time()
        for b in range(per_epoch):
            idx = perm[b * BATCH:(b + 1) * BATCH]
            x, y = xtr[idx], ytr[idx]
            if recipe["augment"]:
                x = augment(x, gen)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * y.numel()
            correct += int((out.argmax(1) == y).sum())
            total += y.numel()
        if max_batches is None:
            print(f"  epoch {ep + 1}/{epochs}: loss {loss_sum / total:.4f} "
              f"train acc {correct / total:.4f}  {time.time() - te:.1f}s", flush=True)
    if cl:
        model.to(memory_format=torch.contiguous_format)
    return time.time() - t0


@torch.no_grad()
def evaluate(model, x, y):
    """Returns (top1 correct count, top5 correct count)."""
    model.eval()
    top1 = top5 = 0
    for i in range(0, x.shape[0], 500):
        out = model(x[i:i + 500])
        t5 = out.topk(5, dim=1).indices
        yy = y[i:i + 500]
        top1 += int((t5[:, 0] == yy).sum())
        top5 += int((t5 == yy[:, None]).any(1).sum())
    return top1, top5


# ----------------------------------------------------------------------------- export

def export(model, name, path, opset):
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(model, dummy, path, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=opset, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=True)
    m = onnx.load(path)
    # The exporter shares initializers with equal values through Identity nodes; give each
    # consumer its own initializer instead, so no pass sees one tensor behind two names.
    inits = {t.name: t for t in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            m.graph.initializer.append(t)
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, path)
    onnx.checker.check_model(m)
    ops = {}
    for node in m.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    bn = [nd for nd in m.graph.node if nd.op_type == "BatchNormalization"]
    bad = [nd.name for nd in bn if len(nd.output) != 1]
    if bad:
        raise RuntimeError(f"{name}: training-mode BatchNormalization outputs in {bad}")
    has_bn = any(isinstance(mod, nn.BatchNorm2d) for mod in model.modules())
    if has_bn and not bn:
        raise RuntimeError(f"{name}: BatchNormalization was folded away in the export")
    if "Dropout" in ops:
        raise RuntimeError(f"{name}: Dropout left in the exported graph")
    return ops


# ----------------------------------------------------------------------------- sample data

def png_gray8(img):
    """Minimal PNG encoder: 8-bit grayscale, no interlace, filter 0 on every row."""
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag, data):
        c = tag + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_sample(out_dir, images, labels):
    d = os.path.join(out_dir, "fmnist_sample")
    os.makedirs(d, exist_ok=True)
    imgs = np.ascontiguousarray(images[:NUM_SAMPLES], dtype=np.uint8)   # [500,1,28,28]
    labs = np.ascontiguousarray(labels[:NUM_SAMPLES], dtype=np.int64)
    np.save(os.path.join(d, "images.npy"), imgs)
    np.save(os.path.join(d, "labels.npy"), labs)
    with open(os.path.join(d, "labels.txt"), "w") as f:
        f.write("".join(f"{int(v)}\n" for v in labs))
    with open(os.path.join(d, "preprocess.json"), "w") as f:
        json.dump({"scale": SCALE, "mean": [MEAN], "std": [STD],
                   "color": "gray", "layout": "NCHW"}, f, indent=2)
        f.write("\n")
    for i in range(NUM_SAMPLES):
        sub = os.path.join(d, "png", f"{int(labs[i]):02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"{i:05d}.png"), "wb") as f:
            f.write(png_gray8(imgs[i, 0]))
    return imgs, labs


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="all", help="|".join(MODELS) + "|all (comma list ok)")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    ap.add_argument("--out", default="testdata/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads; use 1 on a busy machine (OpenMP barriers stall)")
    ap.add_argument("--bench", type=int, default=0, metavar="BATCHES",
                    help="only time BATCHES training batches per model, write nothing")
    args = ap.parse_args()

    names = MODELS if args.model == "all" else args.model.split(",")
    for n in names:
        if n not in RECIPES:
            ap.error(f"unknown model {n!r}; valid: {', '.join(MODELS)}, all")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    tr_img, tr_lab = load_split("train")
    te_img, te_lab = load_split("test")
    xtr, ytr = preprocess(tr_img), torch.from_numpy(tr_lab)
    xte, yte = preprocess(te_img), torch.from_numpy(te_lab)

    if args.bench:
        for name in names:
            torch.manual_seed(args.seed)
            model = build(name)
            dt = train(model, RECIPES[name], xtr, ytr, 1, args.seed, max_batches=args.bench)
            per_epoch = dt / args.bench * ((xtr.shape[0] + BATCH - 1) // BATCH)
            print(f"{name}: {dt / args.bench * 1000:.1f} ms/batch, ~{per_epoch:.0f} s/epoch")
        return

    os.makedirs(args.out, exist_ok=True)
    s_img, s_lab = write_sample(args.out, te_img, te_lab)
    xs, ys = preprocess(s_img), torch.from_numpy(s_lab)

    meta_path = os.path.join(args.out, "models.json")
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)

    for name in names:
        recipe = dict(RECIPES[name])
        epochs = args.epochs if args.epochs is not None else recipe["epochs"]
        print(f"== {name}: {epochs} epochs, {recipe}", flush=True)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        model = build(name)
        secs = train(model, recipe, xtr, ytr, epochs, args.seed)
        c1, c5 = evaluate(model, xte, yte)
        s1, _ = evaluate(model, xs, ys)
        path = os.path.join(args.out, FILES[name])
        ops = export(model, name, path, recipe["opset"])
        params = sum(p.numel() for p in model.parameters())
        bn_stats = sum(b.numel() for b in model.buffers() if b.dtype.is_floating_point)
        cmd = ["python3", "scripts/train_fmnist.py", "--model", name, "--epochs", str(epochs),
               "--seed", str(args.seed), "--threads", str(args.threads), "--out", args.out]
        meta[name] = {
            "file": FILES[name],
            "input": {"name": "input", "shape": ["N", 1, 28, 28], "dtype": "float32"},
            "output": {"name": "logits", "shape": ["N", 10]},
            "preprocessing": {"scale": SCALE, "mean": [MEAN], "std": [STD],
                              "layout": "NCHW", "color": "gray"},
            "test_images": int(yte.numel()),
            "top1_correct": c1,
            "top1": c1 / yte.numel(),
            "top5_correct": c5,
            "top5": c5 / yte.numel(),
            "sample500_top1_correct": s1,
            "params": params,
            "bn_running_stats": bn_stats,
            "opset": recipe["opset"],
            "ops": dict(sorted(ops.items())),
            "file_bytes": os.path.getsize(path),
            "recipe": {k: v for k, v in recipe.items() if k != "opset"} | {"epochs": epochs,
                                                                          "batch": BATCH},
            "train_seconds": round(secs, 1),
            "train_threads": args.threads,
            "torch": torch.__version__,
            "command": shlex.join(cmd),
        }
        print(f"  {name}: top1 {c1}/10000 top5 {c5}/10000 sample500 {s1}/500 "
              f"params {params} {os.path.getsize(path)} bytes {secs:.0f}s", flush=True)
        with open(meta_path, "w") as f:
            json.dump(dict(sorted(meta.items())), f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
