#!/usr/bin/env python3
"""Runs models in ONNX Runtime (onnxruntime-node) and in lwc on the same seeded random inputs and
compares every output. Exit code 0 when all agree, 1 otherwise; one line per model.

    scripts/ort_crosscheck.py [--lwc build/apps/lwc/lwc] [--batch 2] MODEL.onnx ...

Agreement: max|lwc - ort| <= rtol * max|ort| + atol for every output (defaults rtol 1e-4, atol 1e-6),
i.e. relative to the output's own scale, so random-weight models with tiny logits are judged fairly.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def check(model, lwc, batch, rtol, atol, threads):
    with tempfile.TemporaryDirectory() as d:
        ort_dir, lwc_dir = os.path.join(d, "ort"), os.path.join(d, "lwc")
        run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "run", model, "--random-batch", str(batch),
             "--seed", "7", "--threads", str(threads), "--outdir", ort_dir])
        inputs = []
        for f in sorted(os.listdir(os.path.join(ort_dir, "inputs"))):
            inputs += ["--input", f"{os.path.splitext(f)[0]}={os.path.join(ort_dir, 'inputs', f)}"]
        run([lwc, "exec", model, "--threads", str(threads), "--outdir", lwc_dir] + inputs)
        worst = 0.0
        outs = [f for f in sorted(os.listdir(ort_dir)) if f.endswith(".npy")]
        if not outs:
            raise RuntimeError("ONNX Runtime produced no outputs")
        for f in outs:
            a = np.load(os.path.join(ort_dir, f))
            p = os.path.join(lwc_dir, f)
            if not os.path.exists(p):
                raise RuntimeError(f"lwc did not produce output {f}")
            b = np.load(p)
            if a.shape != b.shape or a.dtype != b.dtype:
                raise RuntimeError(f"{f}: ort {a.dtype}{list(a.shape)} vs lwc {b.dtype}{list(b.shape)}")
            if a.dtype.kind in "iub":
                bad = int(np.sum(a != b))
                if bad:
                    raise RuntimeError(f"{f}: {bad} integer elements differ")
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            scale = float(np.max(np.abs(a64))) if a64.size else 0.0
            err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
            rel = err / (rtol * scale + atol)
            worst = max(worst, rel)
            if not rel <= 1.0:
                raise RuntimeError(f"{f}: max abs diff {err:.3g} at output scale {scale:.3g} (limit {rtol * scale + atol:.3g})")
        return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-6)
    args = ap.parse_args()
    failed = 0
    for m in args.models:
        try:
            worst = check(m, args.lwc, args.batch, args.rtol, args.atol, args.threads)
            print(f"ok      {m}  (worst error {worst:.2f} of the limit)")
        except Exception as e:  # one line per model, keep going
            failed += 1
            print(f"FAILED  {m}: {e}")
    print(f"{len(args.models) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
