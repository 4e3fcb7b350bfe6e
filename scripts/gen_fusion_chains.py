#!/usr/bin/env python3
"""Writes seeded random convolution chains that exercise the lwc engine's graph fusions (activations
and residual adds fused into oneDNN convolutions, BatchNormalization folding, NHWC layout), for
scripts/ort_crosscheck.py to run in ONNX Runtime and lwc (CTest fusion_chains_ort):

    scripts/gen_fusion_chains.py --out DIR [--count 120] [--seed 1]

Each model reads x [N, C, H, W] and runs 2-4 blocks: a Conv (1x1 or 3x3 keeping the size,
sometimes depthwise, sometimes followed by BatchNormalization), 0-2 activations drawn from Relu,
LeakyRelu, Clip, HardSigmoid, HardSwish, Sigmoid and SiLU (x * Sigmoid(x)) with random
parameters, sometimes a residual Add of an earlier tensor of the same shape and 0-1 activations
after it. The input is added back before a last 1x1 Conv, so the output depends on the input. A differential run found that two
activations of one kind with other parameters in one fused chain ran with the first one's
parameters (oneDNN 2.6); these models keep such chains covered.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def activation(rng, x, name, nodes, inits):
    """Appends one random activation of x; returns its output name."""
    kind = rng.choice(["Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "SiLU"])
    y = name
    if kind == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [x], [y], alpha=float(rng.choice([0.01, 0.1, 0.2, 0.3, 0.5]))))
    elif kind == "Clip":
        lo, hi = f"{name}_lo", f"{name}_hi"
        inits += [numpy_helper.from_array(np.array(rng.uniform(-3.0, 0.0), np.float32), lo),
                  numpy_helper.from_array(np.array(rng.uniform(0.5, 6.0), np.float32), hi)]
        nodes.append(helper.make_node("Clip", [x, lo, hi], [y]))
    elif kind == "HardSigmoid":
        nodes.append(helper.make_node("HardSigmoid", [x], [y], alpha=float(rng.uniform(0.1, 0.5)),
                                      beta=float(rng.uniform(0.2, 0.6))))
    elif kind == "SiLU":
        nodes.append(helper.make_node("Sigmoid", [x], [f"{name}_gate"]))
        nodes.append(helper.make_node("Mul", [x, f"{name}_gate"], [y]))
    else:
        nodes.append(helper.make_node(kind, [x], [y]))
    return y


def chain(rng, index):
    c = int(rng.choice([1, 3, 4, 8, 16]))
    h, w = int(rng.choice([1, 3, 5, 8])), int(rng.choice([1, 4, 7]))
    if c * h * w < 4:  # a sample of one or three values: an INT8 file's output may not tell two apart
        h = 3
    nodes, inits = [], []
    cur, same = "x", ["x"]  # tensors of shape [N, c, h, w] a residual may read
    for b in range(int(rng.integers(2, 5))):
        k = int(rng.choice([1, 3]))
        group = c if (k == 3 and c > 1 and rng.random() < 0.3) else 1
        wname = f"w{b}"
        fan_in = c // group * k * k
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((c, c // group, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32), wname))
        ins = [cur, wname]
        if rng.random() < 0.5:
            inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, c).astype(np.float32), f"b{b}"))
            ins.append(f"b{b}")
        out = f"conv{b}"
        nodes.append(helper.make_node("Conv", ins, [out], pads=[k // 2] * 4, group=group))
        if rng.random() < 0.3:
            stats = [rng.uniform(0.5, 1.5, c), rng.uniform(-0.3, 0.3, c), rng.uniform(-0.3, 0.3, c), rng.uniform(0.5, 2.0, c)]
            names = [f"bn{b}_{s}" for s in ("scale", "bias", "mean", "var")]
            inits += [numpy_helper.from_array(v.astype(np.float32), n) for v, n in zip(stats, names)]
            nodes.append(helper.make_node("BatchNormalization", [out] + names, [f"bn{b}"]))
            out = f"bn{b}"
        for a in range(int(rng.integers(0, 3))):
            out = activation(rng, out, f"act{b}_{a}", nodes, inits)
        if rng.random() < 0.5:
            other = same[int(rng.integers(0, len(same)))]
            pair = [out, other] if rng.random() < 0.5 else [other, out]
            nodes.append(helper.make_node("Add", pair, [f"res{b}"]))
            out = f"res{b}"
            if rng.random() < 0.7:
                out = activation(rng, out, f"post{b}", nodes, inits)
        same.append(out)
        cur = out
    inits.append(numpy_helper.from_array((rng.standard_normal((4, c, 1, 1)) / np.sqrt(c)).astype(np.float32), "w_out"))
    # x joins before the last Conv: a chain that saturates (HardSigmoid of a large value) still
    # leaves an output that depends on the input, which the cross-check requires.
    nodes.append(helper.make_node("Add", [cur, "x"], ["joined"]))
    nodes.append(helper.make_node("Conv", ["joined", "w_out"], ["y"]))
    graph = helper.make_graph(nodes, f"chain{index}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, h, w])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], producer_name="gen_fusion_chains")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        onnx.save(chain(rng, i), os.path.join(args.out, f"chain_{i:03d}.onnx"))
    print(f"{args.count} models in {args.out}")


if __name__ == "__main__":
    main()
