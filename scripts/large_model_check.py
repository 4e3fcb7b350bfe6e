#!/usr/bin/env python3
"""A model over protobuf's 2 GB through lwc and ONNX Runtime: external data in and out.

    scripts/large_model_check.py [--lwc build/apps/lwc/lwc] [--layers 9] [--width 8192] [--keep DIR]

Builds an MLP whose weights pass 2 GiB (9 MatMul layers of 8192 x 8192 float32: 2.25 GiB, seeded),
saved by the onnx package with its weights in external data; then
- `lwc prune --sparsity 0.5` writes a model that cannot be one ONNX file: lwc must put its weights
  in OUT.data by itself, and its report must count both files;
- `lwc quantize --mode dynamic` writes one that fits in one file (int8 weights): no data file;
- scripts/ort_crosscheck.py runs the input and the pruned model in ONNX Runtime and in lwc on the
  same random inputs: every output agrees.
Exit code 0 when all hold; needs ~12 GB of memory and ~7 GB of disk; a few minutes on 2 cores.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30


def build(path, layers, width):
    rng = np.random.default_rng(7)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = rng.standard_normal((width, width), dtype=np.float32) * np.float32(np.sqrt(2.0 / width))
        b = rng.standard_normal(width, dtype=np.float32) * np.float32(0.01)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        x = f"a{i}"
        if i + 1 < layers:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    graph = helper.make_graph(nodes, "big_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="large_model_check")
    model.ir_version = 8
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(path) + ".data", size_threshold=1024)


def run(cmd):
    print("$", " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"large_model_check: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build", "apps", "lwc", "lwc"))
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--keep", help="work in this folder and leave the files there")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="lwc-large-")
    os.makedirs(work, exist_ok=True)
    failures = []

    def check(ok, what):
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        if not ok:
            failures.append(what)

    try:
        big = os.path.join(work, "big.onnx")
        build(big, a.layers, a.width)
        in_bytes = os.path.getsize(big) + os.path.getsize(big + ".data")
        check(in_bytes > 2 * GIB, f"input model {in_bytes} bytes, over 2 GiB")

        pruned, rep = os.path.join(work, "pruned.onnx"), os.path.join(work, "pruned.json")
        run([a.lwc, "-q", "prune", big, "--sparsity", "0.5", "-o", pruned, "--report", rep])
        r = json.load(open(rep))
        sizes = (os.path.getsize(pruned), os.path.getsize(pruned + ".data") if os.path.exists(pruned + ".data") else 0)
        check(sizes[1] > 2 * GIB and sizes[0] < 1 << 20,
              f"prune wrote {sizes[0]} + {sizes[1]} bytes: the weights in pruned.onnx.data")
        check(r["output_data"] == pruned + ".data", f"report output_data {r['output_data']}")
        check(r["final"]["file_bytes"] == sum(sizes), f"report file_bytes {r['final']['file_bytes']} = the two files")
        check(r["input"]["file_bytes"] == in_bytes, f"report input file_bytes {r['input']['file_bytes']} = the input's two files")
        info = json.loads(run([a.lwc, "info", pruned, "--json"]))
        sparsity = info["weights"]["sparsity"]
        check(abs(sparsity - 0.5) < 0.01 and info["file_bytes"] == sum(sizes),
              f"lwc info reads it back: weight sparsity {sparsity:.4f}, {info['file_bytes']} bytes on disk")

        q = os.path.join(work, "q.onnx")
        run([a.lwc, "-q", "quantize", big, "--mode", "dynamic", "-o", q])
        check(not os.path.exists(q + ".data") and os.path.getsize(q) < 2 * GIB,
              f"dynamic int8 model is one file of {os.path.getsize(q)} bytes")

        out = run([sys.executable, os.path.join(ROOT, "scripts", "ort_crosscheck.py"), "--lwc", a.lwc, "--batch", "2",
                   big, pruned])
        print(out.strip())
        check(True, "ONNX Runtime and lwc agree on the input and the pruned model")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        sys.exit(f"large_model_check: {len(failures)} check(s) failed: {'; '.join(failures)}")
    print("large_model_check: all checks passed")


if __name__ == "__main__":
    main()
