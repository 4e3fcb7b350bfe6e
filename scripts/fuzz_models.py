#!/usr/bin/env python3
"""Feeds lwc broken variants of a real model and checks that every command either succeeds or
fails cleanly: exit code 0, or exit code 1 with one "lwc: error: ..." line. A crash (a signal), an
internal error (exit code 2), a hang, or an error that spans several lines fails the run.

    scripts/fuzz_models.py MODEL [--count N] [--seed S] [--lwc build/apps/lwc/lwc] [--keep DIR]

Each variant applies one to three random edits of the kinds a hand-edited or half-converted model
has: an initializer's dims, data type or (for a 1-D int64 constant: a shape, axes, pads) one value
changed, an attribute set to 0, -1, a huge or a NaN value, an attribute the op does not have, an
input removed or pointed elsewhere, an op type swapped or moved to a domain lwc has no schema for,
a node removed, the graph input's shape or the opset version changed, a name made not UTF-8;
one variant in eight instead gets random byte edits of the serialised file. Every variant goes
through `lwc info` (half of them with --json), `lwc exec` (random batch of 2) and `lwc fuse`, and
at random also `lwc quantize --mode dynamic`, `lwc prune --sparsity 0.5` and `lwc prune
--channels 0.3`. Deterministic for a given seed.
With --keep, each failing variant is saved there for reproduction. Exit code 1 when any run
failed. Needs Debian's python3-onnx.
"""
import argparse
import copy
import os
import random
import subprocess
import sys
import tempfile

import onnx
from onnx import helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ["Conv", "Add", "Relu", "Gemm", "MatMul", "Reshape", "Transpose", "Softmax", "Concat", "Gather", "MaxPool",
       "GlobalAveragePool", "Flatten", "Clip", "LayerNormalization", "Split", "Slice", "Mul", "BatchNormalization",
       "QuantizeLinear", "DequantizeLinear", "QLinearConv", "Squeeze", "Unsqueeze", "Resize", "Pad", "ReduceMean",
       "Cast", "Expand", "Where"]
INTS = [0, -1, 1, 2, 3, -2**31, 2**31 - 1, 2**40, -(2**40), 7, 100000, 65, -7]


def mutate(m, rng):
    """One random edit of m (in place); returns a short description."""
    g = m.graph
    nodes = list(g.node)
    nd = rng.choice(nodes) if nodes else None
    kind = rng.randrange(9)
    if kind == 0 and g.initializer:
        ints = [t for t in g.initializer if t.data_type == onnx.TensorProto.INT64 and 0 < len(t.dims) <= 1
                and (t.raw_data or t.int64_data)]
        if ints and rng.random() < 0.5:  # a shape, axes or pads constant gets a wrong value
            t = rng.choice(ints)
            try:
                v = numpy_helper.to_array(t).copy()
            except ValueError:  # an earlier edit of this variant changed its dims: no longer readable
                v = None
            if v is not None and v.size:
                v.flat[rng.randrange(v.size)] = rng.choice(INTS)
                t.CopyFrom(numpy_helper.from_array(v, t.name))
                return f"a value of {t.name}"
        t = rng.choice(g.initializer)
        if t.dims:
            t.dims[rng.randrange(len(t.dims))] = rng.choice(INTS)
            return f"dims of {t.name}"
    elif kind == 1 and nd is not None and nd.attribute:
        a = rng.choice(nd.attribute)
        if a.type == onnx.AttributeProto.INT:
            a.i = rng.choice(INTS)
        elif a.type == onnx.AttributeProto.INTS and len(a.ints):
            a.ints[rng.randrange(len(a.ints))] = rng.choice(INTS)
        elif a.type == onnx.AttributeProto.INTS:
            a.ints.append(rng.choice(INTS))
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
        return f"attribute {nd.name}.{a.name}"
    elif kind == 2 and nd is not None and len(nd.input):
        if rng.random() < 0.5:
            del nd.input[rng.randrange(len(nd.input))]
            return f"input removed from {nd.name}"
        others = [x for n in nodes for x in n.output][:50]
        nd.input[rng.randrange(len(nd.input))] = rng.choice(["nope", ""] + others)
        return f"input of {nd.name} redirected"
    elif kind == 3 and nd is not None:
        if rng.random() < 0.25:  # an op of a domain lwc has no schema for
            nd.domain = "com.example"
            if not any(o.domain == "com.example" for o in m.opset_import):
                m.opset_import.append(helper.make_opsetid("com.example", 1))
            return f"{nd.name} moves to domain com.example"
        nd.op_type = rng.choice(OPS)
        return f"{nd.name} becomes {nd.op_type}"
    elif kind == 4 and g.initializer:
        t = rng.choice(g.initializer)
        t.data_type = rng.choice([1, 2, 3, 6, 7, 9, 10, 11, 16])
        return f"data type of {t.name}"
    elif kind == 5 and g.input:
        d = g.input[0].type.tensor_type.shape.dim
        if len(d):
            d[rng.randrange(len(d))].dim_value = rng.choice([0, 1, 3, 27, 2**31])
            return "graph input shape"
    elif kind == 6 and m.opset_import:
        m.opset_import[0].version = rng.choice([1, 6, 9, 11, 12, 13, 17, 18, 19, 21, 23, 25, 26, 30])
        return "opset version"
    elif kind == 7 and nd is not None:
        if rng.random() < 0.5 and len(nd.output):
            nd.output[0] = rng.choice(["x2", g.input[0].name if g.input else "x2", nodes[0].output[0]])
            return f"output of {nd.name} renamed"
        g.node.remove(nd)
        return f"{nd.name} removed"
    elif kind == 8 and nd is not None:
        name = rng.choice(["axis", "group", "perm", "kernel_shape", "transA", "strides", "dilations", "pads", "auto_pad"])
        nd.attribute.append(helper.make_attribute(name, rng.choice([[1, 2], [0], 2, -5, "SAME_UPPER", "xx"])))
        return f"attribute {name} added to {nd.name}"
    return "no edit"


def byte_edits(data, rng):
    b = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 8])):
        off = rng.randrange(len(b))
        r = rng.random()
        if r < 0.6:
            b[off] = rng.randrange(256)
        elif r < 0.8:
            b[off] ^= 1 << rng.randrange(8)
        else:
            del b[off:off + rng.randrange(1, 16)]
    if rng.random() < 0.1:
        b = b[:rng.randrange(len(b))]
    return bytes(b)


def run_lwc(lwc, cmd, timeout):
    """Runs `lwc -q CMD`; returns its exit code ("timeout" when it ran past `timeout` seconds) and
    the non-blank lines of its standard error."""
    try:
        r = subprocess.run([lwc, "-q"] + cmd, capture_output=True, timeout=timeout)
        rc, err = r.returncode, r.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        rc, err = "timeout", ""
    return rc, [l for l in err.splitlines() if l.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--count", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--keep", help="folder for the variants that failed")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per command")
    args = ap.parse_args()
    base = onnx.load(args.model)
    raw = open(args.model, "rb").read()
    rng = random.Random(args.seed)
    runs = bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.count):
            if rng.random() < 0.125:
                what, data = "byte edits", byte_edits(raw, rng)
            else:
                m = copy.deepcopy(base)
                what = "; ".join(mutate(m, rng) for _ in range(rng.choice([1, 1, 2, 3])))
                data = m.SerializeToString()
                names = sorted({n.name for n in m.graph.node if len(n.name) >= 2} |
                               {o for n in m.graph.node for o in n.output if len(o) >= 2})
                if names and rng.random() < 0.1:
                    # A name that is not UTF-8 (ONNX's proto2 schema allows any bytes; protobuf's
                    # Python API does not, hence the edit of the serialised bytes, same length).
                    name = rng.choice(names).encode()
                    data = data.replace(name, b"\xff" + name[1:])
                    what += f"; {name.decode()!r} not UTF-8"
            path = os.path.join(tmp, "variant.onnx")
            with open(path, "wb") as f:
                f.write(data)
            out = os.path.join(tmp, "out.onnx")
            cmds = [["info", path] + (["--json"] if rng.random() < 0.5 else []), ["exec", path, "--random-batch", "2", "--outdir", os.path.join(tmp, "exec")],
                    ["fuse", path, "-o", out]]
            if rng.random() < 0.3:
                cmds.append(["quantize", path, "--mode", "dynamic", "--bench-batch", "0", "-o", out])
            if rng.random() < 0.3:
                cmds.append(["prune", path, "--sparsity", "0.5", "--min-params", "0", "--bench-batch", "0", "-o", out])
            if rng.random() < 0.3:
                cmds.append(["prune", path, "--channels", "0.3", "--bench-batch", "0", "-o", out])
            for cmd in cmds:
                runs += 1
                rc, lines = run_lwc(args.lwc, cmd, args.timeout)
                clean = rc == 0 or (rc == 1 and len(lines) == 1 and lines[0].startswith("lwc: error: "))
                if not clean:
                    bad += 1
                    print(f"variant {i} ({what}): lwc {cmd[0]}: exit {rc}: {' | '.join(lines)[-300:]}", flush=True)
                    if args.keep:
                        os.makedirs(args.keep, exist_ok=True)
                        with open(os.path.join(args.keep, f"variant_{args.seed}_{i}.onnx"), "wb") as f:
                            f.write(data)
                if os.path.exists(out):
                    os.remove(out)
    print(f"{os.path.basename(args.model)}: {args.count} variants, {runs} lwc runs, {bad} not clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
