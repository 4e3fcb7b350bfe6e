#!/usr/bin/env python3
"""Runs `lwc fuse` (the cleanup pipeline) on each model and checks the result:
  - no BatchNormalization is left whose input comes from a Conv / ConvTranspose / Gemm;
  - ONNX Runtime gives the same outputs for the cleaned model as for the original (same seeded
    random inputs, max|diff| <= rtol * max|original| + atol, rtol 1e-4, atol 0);
  - the lwc engine running the cleaned model agrees with ONNX Runtime on the original, same limit.
Prints one line per model with nodes, BatchNorms, params and MACs before -> after.
Exit code 0 when every model passes.

    scripts/check_cleanup.py [--lwc build/apps/lwc/lwc] MODEL.onnx ...
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_crosscheck import ROOT, compare_outputs, lwc_exec, ort_run  # noqa: E402


def bn_after_linear(path):
    g = onnx.load(path, load_external_data=False).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    return sum(1 for n in g.node if n.op_type == "BatchNormalization" and producer.get(n.input[0]) in ("Conv", "ConvTranspose", "Gemm"))


def count_bn(path):
    return sum(1 for n in onnx.load(path, load_external_data=False).graph.node if n.op_type == "BatchNormalization")


def check(model, lwc, batch, rtol, atol, threads):
    with tempfile.TemporaryDirectory() as d:
        fused = os.path.join(d, "fused.onnx")
        r = subprocess.run([lwc, "-q", "fuse", model, "-o", fused, "--json", "--threads", str(threads)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"lwc fuse exited {r.returncode}: {r.stderr.strip()}")
        rep = json.loads(r.stdout)
        left = bn_after_linear(fused)
        if left:
            raise RuntimeError(f"{left} BatchNormalization nodes still follow a Conv/ConvTranspose/Gemm")
        ort_a, ort_b, lwc_b = (os.path.join(d, x) for x in ("ort_orig", "ort_fused", "lwc_fused"))
        ort_run(model, ort_a, threads, batch=batch)
        ort_run(fused, ort_b, threads, inputs_from=ort_a)
        lwc_exec(lwc, fused, lwc_b, threads, ort_a)
        w_ort = compare_outputs(ort_a, ort_b, rtol, atol)
        w_lwc = compare_outputs(ort_a, lwc_b, rtol, atol)
        a, b = rep["input"], rep["final"]
        return (f"nodes {a['nodes']}->{b['nodes']}, BN {count_bn(model)}->{count_bn(fused)}, "
                f"params {a['params']}->{b['params']}, MACs {a['macs']}->{b['macs']}, "
                f"worst error ORT {w_ort:.2f} / lwc {w_lwc:.2f} of the limit")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=0.0)
    args = ap.parse_args()
    failed = 0
    for m in args.models:
        try:
            print(f"ok      {os.path.basename(m)}: {check(m, args.lwc, args.batch, args.rtol, args.atol, args.threads)}", flush=True)
        except Exception as e:  # one line per model, keep going
            failed += 1
            print(f"FAILED  {m}: {e}", flush=True)
    print(f"{len(args.models) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
