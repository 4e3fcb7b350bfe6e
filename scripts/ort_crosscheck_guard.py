#!/usr/bin/env python3
"""Checks the guard of scripts/ort_crosscheck.py: agreement on a model whose outputs do not depend
on its input (constant, or varying by less than MIN_SAMPLE_SPREAD of their scale), or whose outputs
are all empty (unless its metadata says they are by design), must fail the check; the same model
with a real dependence must pass it. Exit code 1 otherwise.

    scripts/ort_crosscheck_guard.py [--lwc build/apps/lwc/lwc]
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_crosscheck import ROOT, check  # noqa: E402


def model(path, slope):
    """y = 1 + slope * x for x [N, 4]: slope 0 is constant, slope 1e-5 hardly depends on x."""
    nodes = [helper.make_node("Mul", ["x", "slope"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])]
    inits = [numpy_helper.from_array(np.array([slope], np.float32), "slope"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one")]
    g = helper.make_graph(nodes, "guard", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)


def empty_model(path, expected=False):
    """y = x[:, 0:0], an empty output for any x [N, 4] (as a detector with no box above its threshold);
    `expected`: the model's metadata says so (ort_crosscheck.empty_output = expected)."""
    const = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    g = helper.make_graph([helper.make_node("Slice", ["x", "zero", "zero", "one"], ["y"])], "empty",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 0])],
                          [const("zero", [0]), const("one", [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    if expected:
        helper.set_model_props(m, {"ort_crosscheck.empty_output": "expected"})
    onnx.save(m, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    args = ap.parse_args()
    failed = 0

    def expect(path, label, refused, reason):
        """Runs the check on PATH: it must refuse it with REASON (refused) or pass it."""
        nonlocal failed
        try:
            check(path, args.lwc, 2, 1e-4, 0.0, 2)
            outcome = "passed"
        except RuntimeError as e:
            outcome = "refused" if reason in str(e) else f"failed otherwise: {e}"
        ok = outcome == ("refused" if refused else "passed")
        failed += not ok
        print(f"{'ok    ' if ok else 'WRONG '} {label}: {outcome}")

    with tempfile.TemporaryDirectory() as d:
        for slope, refused in ((0.0, True), (1e-5, True), (0.1, False)):
            path = os.path.join(d, f"slope_{slope}.onnx")
            model(path, slope)
            expect(path, f"y = 1 + {slope} x", refused, "hardly depend on the input")
        for expected in (False, True):
            path = os.path.join(d, f"empty_{expected}.onnx")
            empty_model(path, expected)
            expect(path, "y = x[:, 0:0]" + (" (empty by design)" if expected else ""), not expected,
                   "every output is empty")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
