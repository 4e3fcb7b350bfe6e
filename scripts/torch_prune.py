#!/usr/bin/env python3
"""Prune the Fashion-MNIST test models with PyTorch's own torch.nn.utils.prune (L1
magnitude, unstructured, no fine-tuning), as a reference point for lwc's pruning accuracy.

For each model in testdata/ the script rebuilds the PyTorch architecture from
scripts/train_fmnist.py, loads the weights from the ONNX file's initializers and checks
that the FP32 PyTorch model reproduces models.json's top-1 on the 10,000 test images
(all three steps reuse scripts/torch_ptq.py). Then, for every sparsity, it prunes a fresh
copy of the model two ways and evaluates it on the same 10,000 images:

    torch_global_l1  prune.global_unstructured(params, pruning_method=prune.L1Unstructured,
                     amount=k) over the weights of the pruned layers together, with
                     k = floor(s * their total): the k smallest |w| of all those layers are
                     zeroed, so layers end up with different sparsities.
    torch_layer_l1   prune.l1_unstructured(module, "weight", amount=floor(s * its size)) on
                     each of those layers separately.

The counts are floor(s * n), as lwc's prune_magnitude takes them (a float amount would
make PyTorch round; the two differ by at most one weight per pruning call).

Which layers: the weights of nn.Conv2d and nn.Linear modules (depthwise and 1x1
convolutions included, biases and BatchNorm parameters not) with at least --min-params
weights (default 1000, lwc's prune_magnitude min_params default: a layer whose weight
tensor has fewer elements, e.g. a 16-channel 3x3 depthwise convolution with 144, stays
dense in lwc and here, and is not counted in n). --prune-all (= --min-params 0) prunes
every Conv2d/Linear weight, as torch.nn.utils.prune users usually do. The count is the
weight tensor's number of elements, which BatchNorm folding in lwc's ONNX graph does not
change. The masks are made permanent with prune.remove before evaluation. There is no
fine-tuning and no bias/BN correction afterwards.

Top-1 is the lowest class index among tied maxima, as lwc counts (torch_ptq.evaluate).

BatchNorm: the models keep their BatchNorm layers in PyTorch (resnet, mnv2). Pruning is
done on the unfused model, the way a PyTorch user would apply torch.nn.utils.prune; the
BN layers stay in place and are evaluated in eval mode with their running statistics. The
pruned magnitudes are therefore those of the raw convolution weights, not of the
BN-folded weights that an ONNX-level tool sees after folding, so the set of pruned weights
can differ from lwc's at the same nominal sparsity.

The actual sparsity is measured after pruning by counting exact zeros: params_pruned /
params_total over every Conv2d/Linear weight (the dense small layers included, so it is
below the target when any are left dense), and pruned_layer_sparsity over the pruned
layers only (the target, above it only where the trained weights already had zeros).

Examples:
    python3 scripts/torch_prune.py
    python3 scripts/torch_prune.py --models lenet5,resnet --sparsities 0.5,0.8
    python3 scripts/torch_prune.py --methods torch_global_l1 --out /tmp/torch_prune.json
    python3 scripts/torch_prune.py --prune-all
"""
import argparse
import copy
import json
import math
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(SCRIPTS_DIR)
sys.path.insert(0, SCRIPTS_DIR)
import torch_ptq  # noqa: E402  (ONNX weight loading, FP32 check constants; no side effects)
from torch_ptq import train_fmnist  # noqa: E402  (architectures, data, preprocessing)

METHODS = ("torch_global_l1", "torch_layer_l1")
PRUNED_TYPES = (nn.Conv2d, nn.Linear)


# ----------------------------------------------------------------------------- pruning

# lwc's prune_magnitude min_params default (passes/prune_magnitude.cpp): layers whose weight
# tensor has fewer elements stay dense.
LWC_MIN_PARAMS = 1000


def prunable(model, min_params=0):
    """[(qualified name, module)] for every Conv2d/Linear weight with at least min_params
    elements, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, PRUNED_TYPES) and m.weight.numel() >= min_params]


def apply_pruning(model, method, sparsity, min_params):
    """Prunes the layers prunable(model, min_params); returns them."""
    layers = prunable(model, min_params)
    if not layers:
        raise SystemExit(f"no Conv2d/Linear layer has at least {min_params} weights")
    if method == "torch_global_l1":
        total = sum(m.weight.numel() for _, m in layers)
        prune.global_unstructured([(m, "weight") for _, m in layers],
                                  pruning_method=prune.L1Unstructured,
                                  amount=int(math.floor(sparsity * total)))
    elif method == "torch_layer_l1":
        for _, m in layers:
            prune.l1_unstructured(m, "weight", amount=int(math.floor(sparsity * m.weight.numel())))
    else:
        raise ValueError(method)
    for _, m in layers:   # bake the masks into the weights (drops weight_orig / weight_mask)
        prune.remove(m, "weight")
    return layers


def sparsity_stats(layers):
    """(zeros, total, {layer: fraction of zero weights}) over the pruned weight tensors."""
    zeros = total = 0
    per_layer = {}
    for name, m in layers:
        w = m.weight.detach()
        z = int((w == 0).sum())
        zeros += z
        total += w.numel()
        per_layer[name] = round(z / w.numel(), 4)
    return zeros, total, per_layer


# ----------------------------------------------------------------------------- models

def load_checked_model(name, info, testdata, xte, yte):
    """Build `name`, load its ONNX weights and verify FP32 top-1 against models.json.

    Mirrors the block inside torch_ptq.main(), which is not a separate function there.
    Returns (model in eval mode, fp32 top-1 correct count).
    """
    prep = info["preprocessing"]
    if (abs(prep["scale"] - train_fmnist.SCALE) > 1e-12 or prep["mean"] != [train_fmnist.MEAN]
            or prep["std"] != [train_fmnist.STD]):
        sys.exit(f"{name}: models.json preprocessing {prep} differs from train_fmnist.py")
    model = train_fmnist.build(name)
    try:
        torch_ptq.load_onnx_weights(model, os.path.join(testdata, info["file"]))
    except RuntimeError as exc:
        sys.exit(f"{name}: cannot load the ONNX weights into the PyTorch model: {exc}")
    model.eval()
    fp32_top1, _, _ = torch_ptq.evaluate(model, xte, yte)
    expected = info["top1_correct"]
    if abs(fp32_top1 - expected) > torch_ptq.FP32_TOLERANCE:
        sys.exit(f"{name}: FP32 PyTorch model scores {fp32_top1} correct, models.json says "
                 f"{expected} (tolerance {torch_ptq.FP32_TOLERANCE}); the weights did not "
                 f"load correctly, refusing to report pruned numbers")
    return model, fp32_top1


# ----------------------------------------------------------------------------- main

def parse_sparsities(text):
    out = []
    for item in text.split(","):
        s = float(item)
        if not 0.0 <= s < 1.0:
            raise argparse.ArgumentTypeError(f"sparsity {item} is not in [0, 1)")
        out.append(s)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--models", default="mnv2,resnet,lenet5,lenet300",
                    help="comma list of models.json names, or all (default "
                         "mnv2,resnet,lenet5,lenet300)")
    ap.add_argument("--sparsities", type=parse_sparsities, default=[0.5, 0.7, 0.9],
                    help="comma list of target sparsities (default 0.5,0.7,0.9)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma list of {', '.join(METHODS)} (default both)")
    ap.add_argument("--testdata", default=os.path.join(REPO_DIR, "testdata"))
    ap.add_argument("--data-dir", default=train_fmnist.DATA_DIR)
    ap.add_argument("--out", default=os.path.join(REPO_DIR, "build", "torch_prune.json"),
                    help="JSON list of result rows (default build/torch_prune.json)")
    ap.add_argument("--min-params", type=int, default=LWC_MIN_PARAMS,
                    help="leave Conv2d/Linear layers with fewer weights than this dense (default "
                         f"{LWC_MIN_PARAMS}, as lwc's prune_magnitude min_params)")
    ap.add_argument("--prune-all", action="store_true",
                    help="prune every Conv2d/Linear weight (--min-params 0)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.prune_all:
        args.min_params = 0
    if args.min_params < 0:
        ap.error("--min-params must be >= 0")

    command = shlex.join([sys.executable] + sys.argv)
    print(f"# {command}", flush=True)
    start = time.time()

    with open(os.path.join(args.testdata, "models.json")) as f:
        meta = json.load(f)
    names = list(meta) if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in meta or n not in train_fmnist.MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {', '.join(meta)}")
    methods = args.methods.split(",")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    print(f"# torch {torch.__version__}, {args.threads} threads, sparsities "
          f"{', '.join(f'{s:g}' for s in args.sparsities)}, methods {', '.join(methods)}, "
          f"layers under {args.min_params} weights left dense, no fine-tuning", flush=True)

    train_fmnist.DATA_DIR = args.data_dir
    te_img, te_lab = train_fmnist.load_split("test")
    xte, yte = train_fmnist.preprocess(te_img), torch.from_numpy(te_lab)
    n = len(yte)

    rows = []
    for name in names:
        t0 = time.time()
        model, fp32 = load_checked_model(name, meta[name], args.testdata, xte, yte)
        zeros0, total, _ = sparsity_stats(prunable(model))
        dense = [(ln, m.weight.numel()) for ln, m in prunable(model)
                 if m.weight.numel() < args.min_params]
        print(f"{name:<9} fp32 top1 {fp32}/{n} ({torch_ptq.pct(fp32, n):.2f}%), models.json "
              f"{meta[name]['top1_correct']}; {len(prunable(model))} Conv2d/Linear layers, "
              f"{total} weights ({zeros0} already zero); {len(dense)} layers with "
              f"{sum(c for _, c in dense)} weights left dense (< {args.min_params}), "
              f"{time.time() - t0:.1f}s", flush=True)
        for sparsity in args.sparsities:
            for method in methods:
                t0 = time.time()
                pruned = copy.deepcopy(model)
                layers = apply_pruning(pruned, method, sparsity, args.min_params)
                zeros, tot, per_layer = sparsity_stats(prunable(pruned))
                pz, ptot, _ = sparsity_stats(layers)
                top1, _, _ = torch_ptq.evaluate(pruned, xte, yte)
                secs = round(time.time() - t0, 2)
                rows.append({
                    "model": name, "method": method, "sparsity": sparsity,
                    "top1": top1 / n, "fp32_top1": fp32 / n,
                    "params_pruned": zeros, "params_total": tot, "seconds": secs,
                    "top1_correct": top1, "fp32_top1_correct": fp32,
                    "actual_sparsity": round(zeros / tot, 6),
                    "min_params": args.min_params, "pruned_layers": len(layers),
                    "pruned_layer_params": ptot,
                    "pruned_layer_sparsity": round(pz / ptot, 6),
                    "dense_layers": [ln for ln, c in dense], "layer_sparsity": per_layer,
                })
                pruned_sp = [per_layer[ln] for ln, _ in layers]
                lo, hi = min(pruned_sp), max(pruned_sp)
                print(f"{name:<9} {method:<16} s={sparsity:<4g} top1 {top1}/{n} "
                      f"({torch_ptq.pct(top1, n):.2f}%, {torch_ptq.pct(top1 - fp32, n):+.2f} pp)  "
                      f"pruned {zeros}/{tot} = {100 * zeros / tot:.2f}% ({pz}/{ptot} of "
                      f"{len(layers)} pruned layers)  their sparsity "
                      f"{100 * lo:.1f}..{100 * hi:.1f}%  {secs:.1f}s", flush=True)

    total_secs = time.time() - start
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")

    print()
    print(f"layers under {args.min_params} weights left dense"
          + (" (lwc's prune_magnitude default)" if args.min_params == LWC_MIN_PARAMS else ""))
    print("| model | method | sparsity | top-1 % | delta vs FP32 (pp) | pruned / total weights |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} (FP32 {100 * r['fp32_top1']:.2f}) | {r['method']} | "
              f"{100 * r['sparsity']:g} % | {100 * r['top1']:.2f} | "
              f"{100 * (r['top1'] - r['fp32_top1']):+.2f} | "
              f"{r['params_pruned']} / {r['params_total']} ({100 * r['actual_sparsity']:.2f} %) |")
    print(f"\nwrote {args.out}; total {total_secs:.0f}s")


if __name__ == "__main__":
    main()
