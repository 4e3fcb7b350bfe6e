#!/usr/bin/env python3
"""Export torchvision classification models with random (seeded) weights to ONNX.

Writes DIR/<name>.onnx (opset 13, input "input" [N,3,S,S] float32, output "logits" [N,1000],
dynamic batch) and DIR/torchvision_params.json with the parameter counts PyTorch reports.
No weights are downloaded: every model is built with weights=None after torch.manual_seed.
BatchNorm stays in the graph: the model is in eval mode and exported with
TrainingMode.PRESERVE, which skips the exporter's Conv+BN folding. Files that already exist
are not exported again (their parameter counts are still recorded).

Examples:
    python3 scripts/gen_torchvision.py --out /tmp/tv
    python3 scripts/gen_torchvision.py --out /tmp/tv --models mobilenet_v2,resnet50 --image 160
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torchvision
import onnx

# name -> extra constructor arguments
MODELS = {
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "mobilenet_v3_large": {},
    "resnet18": {},
    "resnet50": {},
    "shufflenet_v2_x1_0": {},
    "squeezenet1_1": {},
    "densenet121": {},
    "efficientnet_b0": {},
    "googlenet": {"aux_logits": False, "init_weights": True},
    "mnasnet1_0": {},
    "regnet_y_400mf": {},
}
# Exported only when named in --models: not torchvision's own configurations, but its classes
# at a size tests can afford. vit_tiny: torchvision's VisionTransformer with ViT-B/16's patch
# embedding and token count (224x224, 16x16 patches, 197 tokens) and torch's MultiheadAttention
# export, but 2 layers of 2 heads of 64 (each attention product 197 x 64 x 197).
# The other five are torchvision's own models, too slow for the tests; README ("Cleanup passes")
# and passes/NOTES.md report the cleanup, quantize and channel-pruning checks run on them by hand.
EXTRA_MODELS = {
    "vit_tiny": lambda: torchvision.models.vision_transformer.VisionTransformer(
        image_size=224, patch_size=16, num_layers=2, num_heads=2, hidden_dim=128, mlp_dim=256),
    "convnext_tiny": lambda: torchvision.models.convnext_tiny(weights=None),
    "efficientnet_v2_s": lambda: torchvision.models.efficientnet_v2_s(weights=None),
    "resnext50_32x4d": lambda: torchvision.models.resnext50_32x4d(weights=None),
    "swin_t": lambda: torchvision.models.swin_t(weights=None),
    "vit_b_16": lambda: torchvision.models.vit_b_16(weights=None),
}
BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
# Bumped whenever build() makes different weights for the same arguments, so that files an older
# version wrote are exported again instead of skipped. 2: VisionTransformer's head and class token.
# 3: BN statistics measured on images for the models in MEASURED_BN.
RECIPE = 3
# With BN as constructed (the identity in eval mode) these models' outputs hardly depend on their
# input: googlenet's weights (truncated normal, std 0.01) and shufflenet's (PyTorch's default
# init) shrink the signal layer by layer, and nothing renormalizes it. Their logits varied between
# two random images by 0 and 5e-5 of their scale, below the ORT comparison's tolerance (1e-4), so
# agreement on them proved nothing. Their BN running statistics are measured instead, on seeded
# random images, so that every BN normalizes its input as it does in a trained model.
MEASURED_BN = {"googlenet", "shufflenet_v2_x1_0"}


def give_vit_weights(model, seed):
    """torchvision's VisionTransformer starts with a zero classifier and a zero class token: its
    logits are 0 for every input, so no comparison on them can fail. Give both seeded values of
    a trained model's scale (the class token like a patch embedding, the head like a fresh Linear)."""
    vit = torchvision.models.vision_transformer.VisionTransformer
    if not isinstance(model, vit):
        return
    gen = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        model.class_token.copy_(torch.randn(model.class_token.shape, generator=gen))
        head = model.heads.head
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) / head.in_features ** 0.5)
        head.bias.copy_(torch.randn(head.bias.shape, generator=gen) * 0.1)


def measure_bn_stats(model, seed, image):
    """Running mean and variance of every BN from one training-mode pass of 8 seeded random images
    (cumulative average, no weight changes)."""
    gen = torch.Generator().manual_seed(seed + 3)
    x = torch.randn(8, 3, image, image, generator=gen)
    bns = [m for m in model.modules() if isinstance(m, BN_TYPES)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
    for m in bns:
        m.momentum = 0.1


def build(name, seed, bn_stats, image=224):
    torch.manual_seed(seed)
    if name in EXTRA_MODELS:
        model = EXTRA_MODELS[name]()
    else:
        model = getattr(torchvision.models, name)(weights=None, **MODELS[name])
    give_vit_weights(model, seed)
    if name in MEASURED_BN:
        measure_bn_stats(model, seed, image)
    elif bn_stats == "random":
        # Freshly initialised BN is the identity (gamma 1, beta 0, mean 0, var 1); give it
        # non-trivial, seeded values so BN folding and quantization see real arithmetic.
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, BN_TYPES):
                    c = m.num_features
                    m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
                    m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
    return model.eval()


def untie_initializers(m):
    """The exporter shares equal-valued initializers through Identity nodes; give each
    consumer its own initializer so no tensor hides behind two names."""
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


def export(model, path, image, opset):
    dummy = torch.zeros(1, 3, image, image)
    tmp = path + ".tmp"
    torch.onnx.export(model, dummy, tmp, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=opset, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=True)
    m = onnx.load(tmp)
    untie_initializers(m)
    onnx.checker.check_model(m)
    bn = [n for n in m.graph.node if n.op_type == "BatchNormalization"]
    if any(len(n.output) != 1 for n in bn):
        raise RuntimeError(f"{path}: training-mode BatchNormalization in the export")
    if any(isinstance(x, BN_TYPES) for x in model.modules()) and not bn:
        raise RuntimeError(f"{path}: BatchNormalization was folded away")
    onnx.save(m, path)
    os.remove(tmp)
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return dict(sorted(ops.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated subset of: " + ", ".join(MODELS) +
                    "; also (only when named): " + ", ".join(EXTRA_MODELS))
    ap.add_argument("--image", type=int, default=224, help="square input size of the dummy")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn-stats", choices=["init", "random"], default="init",
                    help="init: BN as constructed (identity); random: seeded random BN")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in MODELS and n not in EXTRA_MODELS:
            ap.error(f"unknown model {n!r}; valid: {', '.join(list(MODELS) + list(EXTRA_MODELS))}")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    meta_path = os.path.join(args.out, "torchvision_params.json")
    meta = {}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)

    for name in names:
        path = os.path.join(args.out, f"{name}.onnx")
        model = build(name, args.seed, args.bn_stats, args.image)
        params = sum(p.numel() for p in model.parameters())
        bn_stats = sum(m.running_mean.numel() + m.running_var.numel()
                       for m in model.modules() if isinstance(m, BN_TYPES))
        entry = dict(meta.get(name, {}))
        entry.update({"file": f"{name}.onnx", "params": params, "bn_running_stats": bn_stats,
                      "torchvision": torchvision.__version__})
        made_as = {"recipe": RECIPE, "opset": args.opset, "image": args.image, "seed": args.seed,
                   "bn_stats": args.bn_stats}
        if os.path.exists(path) and all(entry.get(k) == v for k, v in made_as.items()):
            print(f"{name}: {path} exists, skipped (params {params}, BN stats {bn_stats})")
        else:
            t0 = time.time()
            ops = export(model, path, args.image, args.opset)
            secs = time.time() - t0
            entry.update(made_as)
            entry.update({"bytes": os.path.getsize(path),
                          "export_seconds": round(secs, 1), "ops": ops})
            print(f"{name}: params {params}, BN stats {bn_stats}, "
                  f"{os.path.getsize(path)} bytes, export {secs:.1f}s", flush=True)
        meta[name] = entry
        with open(meta_path, "w") as f:
            json.dump(dict(sorted(meta.items())), f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
