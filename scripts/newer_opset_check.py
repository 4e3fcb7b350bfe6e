#!/usr/bin/env python3
"""Checks lwc on small models of opsets newer than its ONNX library (opset 17): the nodes that
lwc/opset_lowering.h rewrites rather than renames. For each model, ONNX Runtime 1.30 (which runs
these opsets natively) and `lwc exec` get the same seeded random inputs and must agree; then
`lwc fuse` writes an opset-17 model that ONNX Runtime must load and run with the original's
outputs. Exit code 0 when every model passes; one line per model.

    scripts/newer_opset_check.py [--lwc build/apps/lwc/lwc] [--keep DIR]

The models: an opset-18 Split with num_outputs whose sizes do not divide (declared size: constant
sizes; size only known at run time: computed from Shape; inside a model-local function), and
GroupNormalization at opset 21 (scale and bias per channel; 4-D and 3-D; float16 with the float32
statistics of stash_type) and at opset 18 (per group), RMSNormalization at opset 23 (last axis,
from axis 1, float16), Swish at opset 24 (alpha 1 and 0.7) and Attention at opsets 23 and 24
(causal with fewer queries than keys, bool and float masks, 3-D inputs with heads, one key/value
head for three query heads). Needs Debian's python3-onnx, numpy, node and
scripts/ort (npm install there).
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_crosscheck import ROOT, compare_outputs, lwc_exec, ort_run, run_each  # noqa: E402


def save(path, nodes, inputs, outputs, opset, inits=(), functions=(), extra_opsets=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] + list(extra_opsets),
                          functions=list(functions))
    m.ir_version = 11 if opset >= 23 else 10 if opset >= 21 else 9
    onnx.save(m, path)


def vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def split_models(d):
    """(file, rtol): Splits whose chunks of ceil(d / n) leave a smaller last one."""
    out = []
    f = os.path.join(d, "split18_declared.onnx")  # x's declared size 5 on axis 1: constant sizes [3, 2]
    save(f, [helper.make_node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2, name="split")],
         [vi("x", TensorProto.FLOAT, ["N", 5, 3])], [vi("a", TensorProto.FLOAT, None), vi("b", TensorProto.FLOAT, None)], 18)
    out.append(f)
    f = os.path.join(d, "split18_runtime.onnx")  # reads a Relu's output, whose size no declaration gives
    save(f, [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Split", ["r"], ["a", "b", "c"], axis=-1, num_outputs=3, name="split")],
         [vi("x", TensorProto.FLOAT, ["N", 3, 7])], [vi(o, TensorProto.FLOAT, None) for o in "abc"], 18)
    out.append(f)
    f = os.path.join(d, "split18_function.onnx")  # the Split inside a model-local function
    body = [helper.make_node("Split", ["v"], ["p", "q", "r"], axis=1, num_outputs=3)]
    fn = helper.make_function("local", "Thirds", ["v"], ["p", "q", "r"], body, [helper.make_opsetid("", 18)])
    save(f, [helper.make_node("Thirds", ["x"], ["a", "b", "c"], domain="local", name="thirds")],
         [vi("x", TensorProto.FLOAT, ["N", 8, 2])], [vi(o, TensorProto.FLOAT, None) for o in "abc"], 18,
         functions=[fn], extra_opsets=[helper.make_opsetid("local", 1)])
    out.append(f)
    return out


def group_norm_models(d):
    rng = np.random.default_rng(3)
    out = []
    for name, opset, shape, groups, elem, consts in [("groupnorm21", 21, ["N", 6, 4, 5], 3, TensorProto.FLOAT, True),
                                                      ("groupnorm21_3d", 21, ["N", 8, 7], 2, TensorProto.FLOAT, False),
                                                      ("groupnorm18", 18, ["N", 6, 4, 5], 3, TensorProto.FLOAT, True),
                                                      ("groupnorm21_f16", 21, ["N", 4, 3, 3], 2, TensorProto.FLOAT16, True)]:
        n = shape[1] if opset >= 21 else groups
        dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
        scale = rng.standard_normal(n).astype(dtype)
        bias = rng.standard_normal(n).astype(dtype)
        inputs, inits = [vi("x", elem, shape)], []
        if consts:
            inits = [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")]
        else:
            inputs += [vi("scale", elem, [n]), vi("bias", elem, [n])]
        node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=groups, epsilon=1e-3,
                                name="gn")
        f = os.path.join(d, name + ".onnx")
        save(f, [node], inputs, [vi("y", elem, None)], opset, inits)
        out.append(f)
    return out


def opset23_models(d):
    """RMSNormalization (opset 23) and Swish (opset 24): ops later opsets added with opset-17 forms."""
    rng = np.random.default_rng(5)
    out = []
    for name, shape, axis, elem in [("rmsnorm23", ["N", 4, 6], -1, TensorProto.FLOAT),
                                    ("rmsnorm23_axis1", ["N", 3, 2, 5], 1, TensorProto.FLOAT),
                                    ("rmsnorm23_f16", ["N", 4, 8], -1, TensorProto.FLOAT16)]:
        dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
        scale = numpy_helper.from_array((1 + 0.3 * rng.standard_normal(shape[axis:] if axis >= 0 else [shape[-1]]))
                                        .astype(dtype), "scale")
        node = helper.make_node("RMSNormalization", ["x", "scale"], ["y"], axis=axis, epsilon=1e-4, name="rms")
        f = os.path.join(d, name + ".onnx")
        save(f, [node], [vi("x", elem, shape)], [vi("y", elem, None)], 23, [scale])
        out.append(f)
    for name, alpha in [("swish24", None), ("swish24_alpha", 0.7)]:
        kw = {} if alpha is None else {"alpha": alpha}
        f = os.path.join(d, name + ".onnx")
        save(f, [helper.make_node("Swish", ["x"], ["y"], name="swish", **kw)], [vi("x", TensorProto.FLOAT, ["N", 3, 5])],
             [vi("y", TensorProto.FLOAT, None)], 24)
        out.append(f)
    return out


def attention_models(d):
    """Attention (opsets 23, 24) without a key/value cache: 4-D and 3-D heads, masks, causal, MQA."""
    rng = np.random.default_rng(7)
    F = TensorProto.FLOAT
    bool_mask = numpy_helper.from_array(rng.random((3, 5)) > 0.3, "mask")
    float_mask = numpy_helper.from_array(rng.standard_normal((1, 2, 3, 5)).astype(np.float32), "mask")
    cases = [  # name, Q, K, V shapes, extra input, attributes, opset
        ("attention23_causal", ["N", 2, 3, 8], ["N", 2, 5, 8], ["N", 2, 5, 6], None, {"is_causal": 1}, 23),
        ("attention23_bool_mask", ["N", 2, 3, 8], ["N", 2, 5, 8], ["N", 2, 5, 6], bool_mask, {}, 23),
        ("attention24_float_mask", ["N", 2, 3, 8], ["N", 2, 5, 8], ["N", 2, 5, 6], float_mask, {"scale": 0.3}, 24),
        ("attention23_3d", ["N", 4, 12], ["N", 6, 12], ["N", 6, 9], None, {"q_num_heads": 3, "kv_num_heads": 3}, 23),
        ("attention23_3d_mqa", ["N", 4, 12], ["N", 6, 4], ["N", 6, 3], None, {"q_num_heads": 3, "kv_num_heads": 1}, 23),
    ]
    out = []
    for name, qs, ks, vs, mask, attrs, opset in cases:
        inputs = ["q", "k", "v"] + (["mask"] if mask is not None else [])
        node = helper.make_node("Attention", inputs, ["y"], name="attention", **attrs)
        f = os.path.join(d, name + ".onnx")
        save(f, [node], [vi("q", F, qs), vi("k", F, ks), vi("v", F, vs)], [vi("y", F, None)], opset,
             [mask] if mask is not None else [])
        out.append(f)
    return out


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def check(model, lwc, rtol):
    with tempfile.TemporaryDirectory() as d:
        ort_dir, lwc_dir, fused_dir = (os.path.join(d, k) for k in ("ort", "lwc", "ort_fused"))
        ort_run(model, ort_dir, 2, batch=2)
        lwc_exec(lwc, model, lwc_dir, 2, ort_dir)
        worst = compare_outputs(ort_dir, lwc_dir, rtol, 0.0)
        fused = os.path.join(d, "fused.onnx")
        run([lwc, "-q", "fuse", model, "-o", fused])
        if onnx.load(fused).opset_import[0].version != 17:
            raise RuntimeError("lwc fuse did not write opset 17")
        ort_run(fused, fused_dir, 2, inputs_from=ort_dir)
        worst = max(worst, compare_outputs(ort_dir, fused_dir, rtol, 0.0))
        return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--keep", help="write the models here instead of a temporary folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = args.keep or tmp
        os.makedirs(d, exist_ok=True)
        models = split_models(d) + group_norm_models(d) + opset23_models(d) + attention_models(d)
        # float16 outputs round at 2^-11 of their scale; float32 ones are held to 1e-4 as elsewhere.
        return run_each(models, lambda m: "  (worst error {:.2f} of the limit)".format(
            check(m, args.lwc, 2e-3 if m.endswith("_f16.onnx") else 1e-4)), label=os.path.basename)


if __name__ == "__main__":
    sys.exit(main())
