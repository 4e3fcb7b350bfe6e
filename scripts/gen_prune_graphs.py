#!/usr/bin/env python3
"""Writes seeded random graphs for channel pruning, for scripts/channel_prune_oracle.py to prune and
check (CTest channel_prune_random):

    scripts/gen_prune_graphs.py --out DIR [--count 100] [--seed 1]

Model i (prune_NNNNN.onnx) depends only on (seed, i). It reads x [N, C, H, W] at a random opset from
11 to 17, starts with a Conv and applies 3-12 random blocks, each reading the latest tensor or, one
time in five, an older one (tensors with several readers). Blocks on [N, C, H, W]: Conv (1x1 or
3x3, sometimes strided, sometimes sharing another Conv's weight initializer), depthwise and grouped
Conv, BatchNormalization, activations (Relu, Clip, Sigmoid, LeakyRelu, SiLU, HardSwish), residual
Add, squeeze-excitation, Concat along the channels (nested, one tensor twice, the graph input too),
Split along the channels (sizes as attribute or input, or equal), MaxPool / AveragePool,
ReduceMean over H, W (keepdims 0 or 1), GlobalAveragePool + Squeeze, (GlobalAveragePool +) Flatten
+ Gemm, Reshape (to [N, C*H*W] before a Gemm, a rank round trip, a same-rank reshape that mixes
channels), Slice of the channels (one part, or two covering ones), Pad (spatial, or one more
channel), ConvTranspose, Add/Mul/Sub/Div with a per-channel or scalar constant, MatMul on the last
axis. Blocks on [N, C]: Gemm (transB 0/1), MatMul with a constant, activations,
BatchNormalization, constants, Unsqueeze to [N, C, 1, 1] (then a 1x1 Conv or a broadcast Mul).
Sometimes a last 1x1 Conv or Gemm, a tensor in the middle as an extra graph output.

No MaxPool reads a Pad with constant mode (zeros): ONNX Runtime's PadFusion moves such a Pad into
the MaxPool's own padding, which ignores the border instead of taking the zeros into the maximum,
so ONNX Runtime's result would be wrong for negative inputs (README, "The engine"); an
AveragePool reads it instead, also where a Reshape that keeps the shape (which lwc's cleanup
removes) comes between.
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Channel counts: multiples of 8 and 16 (lwc aligns kept counts to them by default) and odd ones.
CHANNELS = [8, 16, 16, 24, 32, 32, 48, 8, 16, 1, 2, 3, 5, 6, 7, 9, 12, 13, 20, 31, 40, 47]


class Builder:
    """Appends nodes and initializers; tracks each tensor's shape without the batch axis."""

    def __init__(self, rng, opset):
        self.rng, self.opset = rng, opset
        self.nodes, self.inits, self.count = [], [], 0
        self.shape = {}  # name -> (C, H, W) or (C,)
        self.pool4, self.pool2 = [], []  # tensors a block may read, by rank
        self.outputs = []
        self.conv_weights = {}  # (cout, cin, k, group) -> weight name, for sharing
        self.zero_padded = set()  # outputs of constant-mode Pads (no MaxPool may read them)

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value, prefix="c"):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, outputs=1, prefix=None, **attrs):
        names = [self.name(prefix or op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=self.name("n_" + op), **attrs))
        return names if outputs > 1 else names[0]

    def weights(self, shape, fan_in):
        return (self.rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)

    def bias(self, n):
        return self.const(self.rng.uniform(-0.5, 0.5, n).astype(np.float32), "b")

    def pick(self, tensors):
        return tensors[int(self.rng.integers(len(tensors)))]

    def either(self, a, b):
        """[a, b] or [b, a]: commutative ops see their operands both ways round."""
        return [a, b] if self.rng.random() < 0.5 else [b, a]

    def add4(self, t, shape):
        self.shape[t] = tuple(shape)
        self.pool4.append(t)
        return t

    def add2(self, t, c):
        self.shape[t] = (c,)
        self.pool2.append(t)
        return t

    def add_like(self, t, x):
        """t has x's shape."""
        s = self.shape[x]
        return self.add4(t, s) if len(s) == 3 else self.add2(t, s[0])

    # Blocks on [N, C, H, W]

    def conv(self, x, cout=None, k=None, group=1, stride=None):
        C, H, W = self.shape[x]
        cout = cout or int(self.rng.choice(CHANNELS))
        k = k or int(self.rng.choice([1, 3]))
        stride = stride or (2 if H >= 4 and W >= 4 and self.rng.random() < 0.15 else 1)
        key = (cout, C // group, k, group)
        if group == 1 and key in self.conv_weights and self.rng.random() < 0.3:
            w = self.conv_weights[key]
        else:
            w = self.const(self.weights((cout, C // group, k, k), C // group * k * k), "w")
            if group == 1:
                self.conv_weights[key] = w
        inputs = [x, w] + ([self.bias(cout)] if self.rng.random() < 0.6 else [])
        pad = k // 2
        y = self.node("Conv", inputs, prefix="conv", kernel_shape=[k, k], pads=[pad] * 4, strides=[stride] * 2, group=group)
        return self.add4(y, (cout, (H + 2 * pad - k) // stride + 1, (W + 2 * pad - k) // stride + 1))

    def dwconv(self, x):
        return self.conv(x, cout=self.shape[x][0], k=3, group=self.shape[x][0], stride=1)

    def gconv(self, x):
        C = self.shape[x][0]
        divisors = [g for g in range(2, C) if C % g == 0]
        if not divisors:
            return self.conv(x)
        g = int(self.rng.choice(divisors))
        cout = g * int(self.rng.integers(1, max(2, 48 // g) + 1))
        return self.conv(x, cout=cout, k=int(self.rng.choice([1, 3])), group=g, stride=1)

    def bn(self, x):
        C, r = self.shape[x][0], self.rng
        stats = [r.uniform(0.5, 1.5, C), r.uniform(-0.3, 0.3, C), r.uniform(-0.3, 0.3, C), r.uniform(0.5, 2.0, C)]
        y = self.node("BatchNormalization", [x] + [self.const(v.astype(np.float32), "bn") for v in stats], epsilon=1e-5)
        return self.add_like(y, x)

    def act(self, x):
        r = self.rng
        kind = str(r.choice(["Relu", "Clip", "Sigmoid", "LeakyRelu", "SiLU", "HardSwish"]))
        if kind == "HardSwish" and self.opset < 14:
            kind = "Relu"
        if kind == "Clip":
            lo, hi = self.const(np.array(r.uniform(-3, 0), np.float32)), self.const(np.array(r.uniform(0.5, 6), np.float32))
            y = self.node("Clip", [x, lo, hi])
        elif kind == "LeakyRelu":
            y = self.node("LeakyRelu", [x], alpha=float(r.choice([0.01, 0.1, 0.3])))
        elif kind == "SiLU":
            y = self.node("Mul", self.either(x, self.node("Sigmoid", [x])), prefix="silu")
        else:
            y = self.node(kind, [x])
        return self.add_like(y, x)

    def residual(self, x):
        s = self.shape[x]
        same = [t for t in self.pool4 if t != x and self.shape[t] == s]
        if same and self.rng.random() < 0.7:
            other = self.pick(same)
        else:  # a Conv from a tensor of the same size makes the other operand
            other = self.conv(self.pick([t for t in self.pool4 if self.shape[t][1:] == s[1:]]), cout=s[0], stride=1)
            if self.rng.random() < 0.5:
                other = self.act(other)
        return self.add4(self.node("Add", self.either(x, other), prefix="res"), s)

    def conv1x1(self, x, cin, cout):
        return self.node("Conv", [x, self.const(self.weights((cout, cin, 1, 1), cin), "w"), self.bias(cout)], kernel_shape=[1, 1])

    def se(self, x):
        C, H, W = self.shape[x]
        reduced = max(1, C // int(self.rng.choice([2, 4, 8])))
        h = self.node("Relu", [self.conv1x1(self.node("GlobalAveragePool", [x]), C, reduced)])
        gate = self.node("Sigmoid" if self.rng.random() < 0.7 else "HardSigmoid", [self.conv1x1(h, reduced, C)])
        return self.add4(self.node("Mul", self.either(x, gate), prefix="se"), (C, H, W))

    def concat(self, x):
        C, H, W = self.shape[x]
        same_size = [t for t in self.pool4 if self.shape[t][1:] == (H, W)]
        inputs = [x] + [self.pick(same_size) for _ in range(int(self.rng.integers(1, 3)))]
        self.rng.shuffle(inputs)
        y = self.node("Concat", inputs, prefix="cat", axis=1 if self.rng.random() < 0.8 else -3)
        return self.add4(y, (sum(self.shape[t][0] for t in inputs), H, W))

    def split(self, x):
        C, H, W = self.shape[x]
        if C < 2:
            return self.act(x)
        r = self.rng
        n = int(r.integers(2, min(3, C) + 1))
        equal = C % n == 0 and r.random() < 0.4
        if equal:
            sizes = [C // n] * n
        else:
            cuts = sorted(r.choice(np.arange(1, C), n - 1, replace=False).tolist())
            sizes = [b - a for a, b in zip([0] + cuts, cuts + [C])]
        inputs, attrs = [x], {"axis": 1 if r.random() < 0.8 else -3}
        if not equal:
            if self.opset < 13:
                attrs["split"] = sizes
            else:
                inputs.append(self.const(np.array(sizes, np.int64), "split"))
        outs = self.node("Split", inputs, outputs=n, prefix="sp", **attrs)
        for o, s in zip(outs, sizes):
            self.add4(o, (s, H, W))
        return self.pick(outs)

    def pool(self, x):
        C, H, W = self.shape[x]
        op = "AveragePool" if x in self.zero_padded else str(self.rng.choice(["MaxPool", "AveragePool"]))
        if H >= 2 and W >= 2 and self.rng.random() < 0.5:
            return self.add4(self.node(op, [x], prefix="pool", kernel_shape=[2, 2], strides=[2, 2]), (C, H // 2, W // 2))
        attrs = {"count_include_pad": int(self.rng.integers(2))} if op == "AveragePool" else {}
        return self.add4(self.node(op, [x], prefix="pool", kernel_shape=[3, 3], strides=[1, 1], pads=[1] * 4, **attrs), (C, H, W))

    def reducemean(self, x):
        C = self.shape[x][0]
        keep = int(self.rng.integers(2))
        y = self.node("ReduceMean", [x], axes=[2, 3] if self.rng.random() < 0.7 else [-2, -1], keepdims=keep)
        return self.add4(y, (C, 1, 1)) if keep else self.add2(y, C)

    def squeeze(self, x):
        C, H, W = self.shape[x]
        if (H, W) != (1, 1):
            x = self.node("GlobalAveragePool", [x])
        axes = [2, 3] if self.rng.random() < 0.7 else [-1, -2]
        if self.opset >= 13:
            return self.add2(self.node("Squeeze", [x, self.const(np.array(axes, np.int64), "axes")]), C)
        return self.add2(self.node("Squeeze", [x], axes=axes), C)

    def gap_flatten_gemm(self, x):
        C = self.shape[x][0]
        f = self.node("Flatten", [self.node("GlobalAveragePool", [x])], axis=1)
        return self.gemm(self.add2(f, C))

    def flatten_gemm(self, x):
        C, H, W = self.shape[x]
        if C * H * W > 3000:
            return self.gap_flatten_gemm(x)
        f = self.node("Flatten", [x], axis=1 if self.rng.random() < 0.8 else -3)
        return self.gemm(self.add2(f, C * H * W))

    def reshape(self, x):
        C, H, W = self.shape[x]
        choice = self.rng.random()

        def to(shape, src=x):
            return self.node("Reshape", [src, self.const(np.array(shape, np.int64), "shape")], prefix="rs")
        if choice < 0.35 and C * H * W <= 3000:
            return self.gemm(self.add2(to([0, -1]), C * H * W))
        if choice < 0.6:
            y = self.add4(to([0, C, H, W], to([0, C, H * W])), (C, H, W))
        elif C % 2 == 0:
            return self.add4(to([0, C // 2, 2 * H, W]), (C // 2, 2 * H, W))
        else:
            y = self.add4(to([0, C, H, W]), (C, H, W))
        if x in self.zero_padded:  # lwc's cleanup may drop a Reshape that keeps the shape
            self.zero_padded.add(y)
        return y

    def slice_channels(self, x):
        C, H, W = self.shape[x]
        if C < 2:
            return self.act(x)
        a = int(self.rng.integers(1, C))

        def part(start, end):
            ints = [self.const(np.array([v], np.int64), "sl") for v in (start, end, 1)]
            return self.node("Slice", [x] + ints, prefix="slice")
        if self.rng.random() < 0.5:
            return self.add4(part(0, a), (a, H, W))
        self.add4(part(0, a), (a, H, W))  # a covering pair: lwc's fuse_slices may make it a Split
        return self.add4(part(a, C), (C - a, H, W))

    def pad(self, x):
        C, H, W = self.shape[x]
        p = int(self.rng.integers(1, 3))
        channel = self.rng.random() < 0.2
        mode = "constant" if channel else str(self.rng.choice(["constant", "reflect", "edge"]))
        if mode == "reflect" and (H <= p or W <= p):
            mode = "constant"
        pads = [0, int(channel), p, p, 0, 0, p, p]
        y = self.node("Pad", [x, self.const(np.array(pads, np.int64), "pads")], mode=mode)
        if mode == "constant":
            self.zero_padded.add(y)
        return self.add4(y, (C + int(channel), H + 2 * p, W + 2 * p))

    def convtranspose(self, x):
        C, H, W = self.shape[x]
        cout = int(self.rng.choice(CHANNELS))
        k, s, p = (2, 2, 0) if self.rng.random() < 0.5 and H * W <= 64 else (3, 1, 1)
        inputs = [x, self.const(self.weights((C, cout, k, k), C * k * k), "wt")]
        if self.rng.random() < 0.5:
            inputs.append(self.bias(cout))
        y = self.node("ConvTranspose", inputs, prefix="convt", kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        return self.add4(y, (cout, (H - 1) * s - 2 * p + k, (W - 1) * s - 2 * p + k))

    def chanconst(self, x):
        """Add/Mul/Sub/Div with a per-channel ([C], [C, 1, 1], [1, C, 1, 1]) or scalar constant."""
        s, r = self.shape[x], self.rng
        C = s[0]
        op = str(r.choice(["Add", "Mul", "Sub", "Div"]))
        shapes = [(C, 1, 1), (1, C, 1, 1), (), (1,)] if len(s) == 3 else [(C,), (1,)]
        shape = shapes[int(r.integers(len(shapes)))]
        lo, hi = (0.5, 1.5) if op in ("Mul", "Div") else (-0.5, 0.5)
        c = self.const(r.uniform(lo, hi, shape).astype(np.float32), "k")
        inputs = [x, c] if op in ("Sub", "Div") else self.either(x, c)
        return self.add_like(self.node(op, inputs), x)

    def matmul_last(self, x):
        C, H, W = self.shape[x]
        n = int(self.rng.integers(1, 9))
        return self.add4(self.node("MatMul", [x, self.const(self.weights((W, n), W), "wm")], prefix="mml"), (C, H, n))

    # Blocks on [N, C]

    def gemm(self, x):
        K = self.shape[x][0]
        n = int(self.rng.choice(CHANNELS))
        trans = int(self.rng.integers(2))
        inputs = [x, self.const(self.weights((n, K) if trans else (K, n), K), "wg")]
        if self.rng.random() < 0.7:
            inputs.append(self.bias(n))
        return self.add2(self.node("Gemm", inputs, transB=trans), n)

    def matmul(self, x):
        K = self.shape[x][0]
        n = int(self.rng.choice(CHANNELS))
        return self.add2(self.node("MatMul", [x, self.const(self.weights((K, n), K), "wm")]), n)

    def unsqueeze(self, x):
        C = self.shape[x][0]
        if self.opset >= 13:
            y = self.node("Unsqueeze", [x, self.const(np.array([2, 3], np.int64), "axes")])
        else:
            y = self.node("Unsqueeze", [x], axes=[2, 3])
        y = self.add4(y, (C, 1, 1))
        spatial = [t for t in self.pool4 if self.shape[t][0] == C and self.shape[t][1:] != (1, 1)]
        if spatial and self.rng.random() < 0.5:  # broadcast over a tensor of the same channels
            other = self.pick(spatial)
            return self.add4(self.node("Mul", self.either(other, y), prefix="bmul"), self.shape[other])
        return self.conv(y, k=1)


# (block, weight) for a current tensor of rank 4 and of rank 2.
BLOCKS4 = [("conv", 6), ("dwconv", 3), ("gconv", 1.5), ("bn", 3), ("act", 5), ("residual", 3), ("se", 1.5),
           ("concat", 2.5), ("split", 2), ("pool", 1.5), ("reducemean", 1), ("squeeze", 0.7), ("gap_flatten_gemm", 0.7),
           ("flatten_gemm", 0.7), ("reshape", 1), ("slice_channels", 1), ("pad", 1), ("convtranspose", 0.8),
           ("chanconst", 2), ("matmul_last", 0.5)]
BLOCKS2 = [("gemm", 3), ("matmul", 2), ("act", 2), ("bn", 0.5), ("chanconst", 1.5), ("unsqueeze", 2)]


def drop_dead(model):
    """Removes the nodes and initializers no graph output depends on (older tensors read later
    leave some behind)."""
    needed = {o.name for o in model.graph.output}
    live = []
    for n in reversed(model.graph.node):
        if any(o in needed for o in n.output):
            live.append(n)
            needed.update(i for i in n.input if i)
    inits = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.node[:], model.graph.initializer[:]
    model.graph.node.extend(reversed(live))
    model.graph.initializer.extend(inits)


def make_model(seed, index):
    rng = np.random.default_rng([seed, index])
    opset = int(rng.integers(11, 18))
    b = Builder(rng, opset)
    cin = int(rng.choice([1, 2, 3, 3, 4, 8]))
    H, W = (int(rng.choice([1, 2, 3, 5, 7, 8, 8, 12])) for _ in range(2))
    b.add4("x", (cin, H, W))
    cur = b.conv("x")
    for _ in range(int(rng.integers(3, 13))):
        pool, blocks = (b.pool4, BLOCKS4) if len(b.shape[cur]) == 3 else (b.pool2, BLOCKS2)
        if rng.random() < 0.2 and len(pool) > 1:  # an older tensor gets another reader
            cur = b.pick([t for t in pool if t != "x"])
        names, weights = zip(*blocks)
        weights = np.array(weights) / sum(weights)
        cur = getattr(b, names[int(rng.choice(len(names), p=weights))])(cur)
        if rng.random() < 0.08:
            b.outputs.append(cur)
    if rng.random() < 0.7:  # a last layer makes the groups before it interior ones
        cur = b.conv(cur, k=1) if len(b.shape[cur]) == 3 else b.gemm(cur)
    if cur not in b.outputs:
        b.outputs.append(cur)
    if rng.random() < 0.15:
        extra = [t for t in b.pool4 + b.pool2 if t not in b.outputs and t != "x"]
        if extra:
            b.outputs.append(b.pick(extra))
    graph = helper.make_graph(b.nodes, f"prune_graph_{index}",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", cin, H, W])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in b.outputs], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="gen_prune_graphs")
    model.ir_version = 8
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    typed = {v.name: v for v in inferred.graph.output}
    del model.graph.output[:]
    model.graph.output.extend(typed[o] for o in b.outputs)
    drop_dead(model)
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.count):
        onnx.save(make_model(args.seed, i), os.path.join(args.out, f"prune_{i:05d}.onnx"))
    print(f"{args.count} models in {args.out}")


if __name__ == "__main__":
    main()
