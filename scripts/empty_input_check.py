#!/usr/bin/env python3
"""Runs ONNX's backend node cases with one input emptied along one axis (that dimension set to 0,
the rest of the case's own inputs unchanged; in the model that dimension is made symbolic and
the outputs' shapes left open) in ONNX Runtime (onnxruntime-node) and in lwc, and
compares: where both answer, every output's type and shape must match and its values agree
within rtol of their scale; where only one answers, the case is listed with the other's error.

    scripts/empty_input_check.py [--lwc build/apps/lwc/lwc] [--cases PATTERN] [--axes first|all]
                                 [--limit N] [--jobs J] [--min-agree N]

Exit code 1 when both answer and disagree (a wrong shape, type or value), except on the cases
ORT_WRONG names: there ONNX Runtime 1.30 gives an empty input's reduction over a negative axis
with keepdims the input's own shape ([0, 2, 2] for ReduceSum over axis -2 of [0, 2, 2]) where the
spec, and lwc, give [0, 1, 2]; those are printed as "ORT wrong". Cases where only ONNX Runtime
answers are printed as "lwc refuses" with lwc's error line, for a reader to judge (lwc refuses
shapes that do not fit where ONNX Runtime lets them pass); cases where only lwc answers as "ORT
refuses". Needs Debian's libonnx-testdata and python3-onnx.
"""
import argparse
import fnmatch
import glob
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_DIR = "/usr/share/libonnx-testdata/data/node"
# Where ONNX Runtime 1.30's answer on an emptied input is not the spec's (see the docstring).
ORT_WRONG = ["test_reduce_*negative_axes*", "test_arg*_negative_axis_keepdims_*"]


def load_inputs(case):
    """The case's graph inputs (name, array) from test_data_set_0, or None when one is not a tensor."""
    m = onnx.load(os.path.join(case, "model.onnx"), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    names = [i.name for i in m.graph.input if i.name not in inits]
    files = sorted(glob.glob(os.path.join(case, "test_data_set_0", "input_*.pb")),
                   key=lambda f: int(os.path.basename(f)[6:-3]))
    if len(files) != len(names):
        return None
    out = []
    for name, f in zip(names, files):
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            try:
                t.ParseFromString(fh.read())
                a = numpy_helper.to_array(t)
            except Exception:
                return None
        if a.dtype == object:
            return None
        out.append((name, a))
    return out


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
    return r.returncode, lines[-1] if lines else ""


def outputs(d):
    return {f: np.load(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".npy")} if os.path.isdir(d) else {}


def compare(ref, got, rtol):
    if sorted(ref) != sorted(got):
        return f"outputs {sorted(got)} vs {sorted(ref)}"
    for f in ref:
        a, b = ref[f], got[f]
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{f}: {b.dtype}{list(b.shape)} vs {a.dtype}{list(a.shape)}"
        if a.size == 0:
            continue
        if a.dtype.kind in "fc":
            fa, fb = a.astype(np.float64), b.astype(np.float64)
            # NaN where the other has NaN, the same infinities where either has one, then the finite rest.
            inf = np.isinf(fa) | np.isinf(fb)
            if not np.array_equal(np.isnan(fa), np.isnan(fb)) or not np.array_equal(fa[inf], fb[inf]):
                return f"{f}: values differ"
            fin = np.isfinite(fa) & np.isfinite(fb)
            scale = np.max(np.abs(fa[fin])) if fin.any() else 0.0
            if fin.any() and np.max(np.abs(fa[fin] - fb[fin])) > rtol * scale + 1e-6:
                return f"{f}: values differ"
        elif not np.array_equal(a, b):
            return f"{f}: values differ"
    return None


def check(variant, lwc, rtol):
    case, idx, axis, inputs = variant
    label = f"{os.path.basename(case)} input {idx} ({inputs[idx][0]}) axis {axis}"
    with tempfile.TemporaryDirectory() as tmp:
        args = []
        for k, (name, a) in enumerate(inputs):
            if k == idx:
                a = np.take(a, np.arange(0), axis=axis)
            p = os.path.join(tmp, f"in{k}.npy")
            np.save(p, a)
            args += ["--input", f"{name}={p}"]
        # The emptied dimension made symbolic in the model's declaration, and the outputs' shapes
        # left open, so that neither runtime refuses the input for its declared size alone.
        m = onnx.load(os.path.join(case, "model.onnx"))
        inp = next(i for i in m.graph.input if i.name == inputs[idx][0])
        if inp.type.tensor_type.HasField("shape") and axis < len(inp.type.tensor_type.shape.dim):
            d = inp.type.tensor_type.shape.dim[axis]
            d.Clear()
            d.dim_param = "emptied"
        for o in m.graph.output:
            if o.type.HasField("tensor_type"):
                o.type.tensor_type.ClearField("shape")
        del m.graph.value_info[:]
        model = os.path.join(tmp, "model.onnx")
        onnx.save(m, model)
        o_rc, o_msg = run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "run", model, "--threads", "1",
                           "--outdir", os.path.join(tmp, "ort")] + args)
        l_rc, l_msg = run([lwc, "-q", "exec", model, "--threads", "1", "-o", os.path.join(tmp, "lwc")] + args)
        if o_rc != 0 and l_rc != 0:
            return "both refuse", label, ""
        if o_rc != 0:
            return "ORT refuses", label, o_msg
        if l_rc != 0:
            return "lwc refuses", label, l_msg
        why = compare(outputs(os.path.join(tmp, "ort")), outputs(os.path.join(tmp, "lwc")), rtol)
        if why and any(fnmatch.fnmatch(os.path.basename(case), p) for p in ORT_WRONG):
            return "ORT wrong", label, why
        return ("DIFFER", label, why) if why else ("agree", label, "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--cases", default="test_*", help="fnmatch pattern over the case folders")
    ap.add_argument("--axes", choices=["first", "all"], default="first")
    ap.add_argument("--limit", type=int, default=0, help="at most this many variants (0: all)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--min-agree", type=int, default=1,
                    help="fail unless at least this many variants are answered by both and agree")
    a = ap.parse_args()
    variants = []
    for case in sorted(glob.glob(os.path.join(NODE_DIR, "*"))):
        if not fnmatch.fnmatch(os.path.basename(case), a.cases):
            continue
        inputs = load_inputs(case)
        if not inputs:
            continue
        for idx, (_, arr) in enumerate(inputs):
            for axis in range(arr.ndim if a.axes == "all" else min(arr.ndim, 1)):
                if arr.shape[axis] > 0:
                    variants.append((case, idx, axis, inputs))
    if a.limit:
        variants = variants[:a.limit]
    counts = {}
    bad = 0
    with ThreadPoolExecutor(max_workers=a.jobs) as ex:
        for kind, label, msg in ex.map(lambda v: check(v, a.lwc, a.rtol), variants):
            counts[kind] = counts.get(kind, 0) + 1
            if kind in ("DIFFER", "ORT wrong", "lwc refuses", "ORT refuses"):
                print(f"{kind:12s} {label}: {msg}", flush=True)
            bad += kind == "DIFFER"
    print(f"{len(variants)} variants: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if counts.get("agree", 0) < a.min_agree:
        print(f"only {counts.get('agree', 0)} variants agree (--min-agree {a.min_agree}): nothing much was compared")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
