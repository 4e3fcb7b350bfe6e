#!/usr/bin/env python3
"""Export torchvision segmentation and detection models with random (seeded) weights to ONNX.

The classifiers of scripts/gen_torchvision.py run convolutions and a few shape ops; these add what
dense-prediction exports are made of: bilinear Resize to a size computed from Shape, squeeze-excite
gates, dilated convolutions (DeepLabV3's ASPP), anchor generation from Range / Expand / Tile, box
decoding, TopK, NonZero / GatherND, NonMaxSuppression, RoiAlign and If.

    python3 scripts/gen_torchvision_dense.py --out DIR [--models lraspp,ssdlite]

Writes DIR/<name>.onnx (opset 13). Segmentation models take "input" [N, 3, 224, 224] (dynamic
batch) and give "out" [N, 21, 224, 224]; detection models take one image "images" [3, 320, 320]
and give "boxes" [D, 4], "scores" [D] and "labels" [D] (in torchvision's order), D <= 50. No weights
are downloaded (weights=None, weights_backbone=None). BN running statistics are measured on seeded
random images (training-mode passes, cumulative average), as a trained model's would be: with BN
as constructed, the random networks' activations shrink layer by layer (deeplabv3's to 1e-12 by
its head), and agreement on such outputs would prove little. The detectors keep every box
(score threshold 0): with random weights no score passes torchvision's default thresholds, and an
empty output agrees with anything. Files that exist are not exported again.
"""
import argparse
import os
import time

import torch
import torchvision

SEG = torchvision.models.segmentation
DET = torchvision.models.detection
MODELS = {
    "lraspp": lambda: SEG.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21),
    "deeplabv3": lambda: SEG.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21,
                                                          aux_loss=False),
    "ssdlite": lambda: DET.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91,
                                                         score_thresh=0.0, detections_per_img=50),
    "fasterrcnn": lambda: DET.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                    num_classes=91, box_score_thresh=0.0,
                                                                    box_detections_per_img=50),
}
DETECTION = {"ssdlite", "fasterrcnn"}


class Segmenter(torch.nn.Module):
    """The segmentation model's "out" tensor (torchvision returns a dict)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


def measure_bn(model, seed, detection):
    """BN running statistics from training-mode passes over seeded random images (momentum None:
    the cumulative average). The detectors' backbones are run alone (their training forward needs
    targets)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    gen = torch.Generator().manual_seed(seed + 1)
    net = model.backbone if detection else model
    net.train()
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(4, 3, 320 if detection else 224, 320 if detection else 224, generator=gen)
            net(x)
    for m in bns:
        m.momentum = 0.1
    model.eval()


def spread_scores(model, factor=10.0):
    """Scales SSDlite's class logits: with random weights the softmax over 91 classes is nearly
    uniform, the 50 kept scores lay within 2.6e-7 of each other (lwc and ONNX Runtime 4.7e-8 apart),
    and which boxes are kept and in what order turned on the last bits of float rounding, which
    differ between runtimes and CPUs. With logits 10x larger the kept scores are at least 1e-4
    apart (the runtimes 5.5e-6). Faster R-CNN is left as it is: its kept scores saturate at 1.0 when
    scaled, and its boxes pass through Exp and RoiAlign twice, so the runtimes' rounding moves them
    by up to 4e-4 of the image (2026-12-07); it is a model to check by hand (--rtol 1e-3)."""
    heads = [m for m in model.head.classification_head.modules()
             if isinstance(m, torch.nn.Conv2d) and m.out_channels % 91 == 0]
    with torch.no_grad():
        for h in heads:
            h.weight.mul_(factor)
            h.bias.mul_(factor)


def export(name, path, seed):
    torch.manual_seed(seed)
    model = MODELS[name]()
    detection = name in DETECTION
    measure_bn(model, seed, detection)
    if name == "ssdlite":
        spread_scores(model)
    tmp = path + ".tmp"
    if detection:
        # torchvision's dicts, in their order: SSD gives boxes, scores, labels; Faster R-CNN boxes, labels, scores.
        outs = ["boxes", "labels", "scores"] if name == "fasterrcnn" else ["boxes", "scores", "labels"]
        torch.onnx.export(model, ([torch.rand(3, 320, 320)],), tmp, opset_version=13, input_names=["images"],
                          output_names=outs)
    else:
        torch.onnx.export(Segmenter(model), torch.randn(1, 3, 224, 224), tmp, opset_version=13,
                          input_names=["input"], output_names=["out"],
                          dynamic_axes={"input": {0: "N"}, "out": {0: "N"}})
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    names = [n for n in args.models.split(",") if n]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r}; valid: {', '.join(MODELS)}")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    for name in names:
        path = os.path.join(args.out, f"{name}.onnx")
        if os.path.exists(path):
            print(f"{name}: {path} exists, skipped")
            continue
        t0 = time.time()
        export(name, path, args.seed)
        print(f"{name}: {os.path.getsize(path)} bytes, export {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
