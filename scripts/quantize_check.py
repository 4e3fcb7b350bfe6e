#!/usr/bin/env python3
"""INT8 quantization on real architectures: for each model, `lwc quantize` (static, minmax, a few
Fashion-MNIST images through scripts/imagenet_from_fmnist.json as calibration data, QDQ and
QOperator output), then checks that ONNX Runtime loads and runs the result and agrees with lwc's
engine on it (scripts/ort_crosscheck.py on seeded random inputs).

    scripts/quantize_check.py [--formats qdq qoperator] [--calib-limit 8] [--] MODEL.onnx ...
    scripts/quantize_check.py build/test_models/torchvision/*.onnx
    scripts/quantize_check.py --random-calib 16 --formats qdq --rtol 0.05 --odd-batch 0 -- CHAINS/*.onnx

Agreement: lwc's engine (fused integer kernels, what `lwc eval` measures) against ONNX Runtime on
the same file, within --rtol (default 0.25) of each output's largest magnitude, no absolute
slack. The bound is loose on purpose. The two runtimes round requantization ties differently
(oneDNN's documented rounding; ONNX Runtime rescales in its own order): a few elements one int8
step apart per layer (lwc's fused kernels against the plain QDQ float computation: 3 of 401,408
in mobilenet_v3_small's first layer). These random-weight networks let their signal collapse
layer by layer (efficientnet_b0's logits are near 1e-14, mobilenet_v2's near 1e-9), so such a
step in an early layer ends up as 1-13 % of the logits' scale. A wrong scale, zero point or
layout, or a missing node, is off by the whole scale or more. How close the two runtimes are
where it matters is checked on the trained models (scripts/quant_table.py --check: top-1 within
0.1 points on 10 000 test images).

Each file also runs once in lwc's engine at an odd batch (--odd-batch, default 33: `lwc exec
--random-batch`), which must exit cleanly: at 33 the classifiers are one image of 33 pixels for
oneDNN, where its AMX 1x1 int8 kernel wrote past its output (heap corruption that aborted
mobilenet_v3 and efficientnet_b0 INT8 files until lwc stopped using that kernel there).

On an x86 CPU without VNNI the static quantization runs with --reduce-range (7-bit weights), as
scripts/demo.sh does: ONNX Runtime's u8 x s8 kernels add pairs of products in saturating int16
there, so with 8-bit weights the check would measure that saturation (if_then.onnx of
scripts/gen_op_models.py: 25 % of its output's scale off on a 2-core AVX2 EPYC, 2026-12-07), not
whether lwc's file is right. lwc's engine is exact with 8-bit weights on any CPU.

Exit code 1 when any model fails to quantize, load or agree.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_crosscheck import ROOT, check, host_x86_without_vnni  # noqa: E402

FM = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def random_calibration(model, samples, path):
    """Writes `samples` seeded uniform [-1, 1) samples of MODEL's first input (its dimensions after the
    batch must be fixed) to PATH as .npy; returns PATH."""
    import numpy as np
    import onnx
    dims = onnx.load(model).graph.input[0].type.tensor_type.shape.dim[1:]
    if any(not d.HasField("dim_value") for d in dims):
        raise SystemExit(f"{model}: --random-calib needs an input whose dimensions after the batch are fixed")
    shape = [samples] + [d.dim_value for d in dims]
    np.save(path, np.random.default_rng(3).uniform(-1.0, 1.0, shape).astype(np.float32))
    return path


def pass_stat(report, name):
    """Statistic NAME of the quantize pass (the last stage) in lwc's report file; 0 when absent."""
    import json
    with open(report) as f:
        return json.load(f)["stages"][-1]["stats"].get(name, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--formats", nargs="+", default=["qdq", "qoperator"], choices=["qdq", "qoperator"])
    ap.add_argument("--calib-limit", type=int, default=8)
    ap.add_argument("--rtol", type=float, default=0.25)
    ap.add_argument("--extra", default="", help="more lwc quantize arguments, e.g. '--act-type int8'")
    ap.add_argument("--odd-batch", type=int, default=33, help="also run each file at this batch (0: skip)")
    ap.add_argument("--random-calib", type=int, default=0,
                    help="calibrate on this many seeded uniform [-1, 1) samples of the model's input shape instead of "
                         "Fashion-MNIST (models whose input is not an image, e.g. scripts/gen_fusion_chains.py's)")
    ap.add_argument("--expect-stat", action="append", default=[], metavar="NAME",
                    help="the quantize pass's statistic NAME (the last stage's in the --report file) must be at least "
                         "1 for every file, e.g. softmax_scales_raised: a workaround that has to fire on these models")
    args = ap.parse_args()
    extra = args.extra.split()
    if host_x86_without_vnni() and "--reduce-range" not in extra and "dynamic" not in extra:
        extra.append("--reduce-range")
        print("quantize_check: this CPU has no VNNI: quantizing with --reduce-range (see --help)")
    bad = 0
    print("| model | format | quantize s | ORT loads, agrees (worst error as a fraction of the limit) |")
    print("|---|---|---:|---|")
    with tempfile.TemporaryDirectory() as d:
        for m in args.models:
            name = os.path.splitext(os.path.basename(m))[0]
            for fmt in args.formats:
                out = os.path.join(d, f"{name}.{fmt}.onnx")
                t0 = time.time()
                if args.random_calib > 0:
                    calib = ["--calib", random_calibration(m, args.random_calib, os.path.join(d, f"{name}.calib.npy"))]
                else:
                    calib = ["--calib", FM, "--calib-limit", str(args.calib_limit), "--preprocess",
                             os.path.join(ROOT, "scripts/imagenet_from_fmnist.json")]
                report = os.path.join(d, f"{name}.{fmt}.report.json")
                q = subprocess.run([args.lwc, "-q", "quantize", m, "-o", out, "--format", fmt] + calib +
                                   ["--bench-batch", "0", "--layer-samples", "0", "--report", report] +
                                   extra, capture_output=True, text=True)
                seconds = time.time() - t0
                if q.returncode != 0:
                    print(f"| {name} | {fmt} | quantize failed: {q.stderr.strip()} |", flush=True)
                    bad += 1
                    continue
                missing = [s for s in args.expect_stat if pass_stat(report, s) < 1]
                if missing:
                    print(f"| {name} | {fmt} | NO: statistic {', '.join(missing)} is not at least 1 in {report} |",
                          flush=True)
                    bad += 1
                    continue
                try:
                    worst = check(out, args.lwc, batch=2, rtol=args.rtol, atol=0.0, threads=2)
                    verdict = f"yes ({worst:.2f} of the limit)"
                except Exception as e:  # one row per file, keep going
                    bad += 1
                    verdict = f"NO: {e}"
                if args.odd_batch > 0:
                    r = subprocess.run([args.lwc, "-q", "exec", out, "--random-batch", str(args.odd_batch), "--outdir",
                                        os.path.join(d, "odd"), "--threads", "2"], capture_output=True, text=True)
                    if r.returncode != 0:
                        bad += 1
                        verdict += f"; NO: batch {args.odd_batch} exited {r.returncode}: {r.stderr.strip()[-200:]}"
                    else:
                        verdict += f"; batch {args.odd_batch} runs"
                print(f"| {name} | {fmt} | {seconds:.1f} | {verdict} |", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
