#!/usr/bin/env python3
"""Runs models in ONNX Runtime (onnxruntime-node) and in lwc on the same seeded random inputs and
compares every output. Exit code 0 when all agree, 1 otherwise; one line per model.

    scripts/ort_crosscheck.py [--lwc build/apps/lwc/lwc] [--batch 2] MODEL.onnx ...

Agreement: max|lwc - ort| <= rtol * max|ort| + atol for every output (defaults rtol 1e-4, atol 0),
i.e. relative to the output's own scale, so random-weight models with tiny logits are judged fairly
(several torchvision models with random weights have logits near 1e-9: an absolute slack of 1e-6,
the default until 2026-11-30, let any output of theirs pass). A reference run whose samples' outputs
differ by at most MIN_SAMPLE_SPREAD (1e-3) of their scale (all zeros, say) fails the check:
agreement on it would prove nothing.
"""
import argparse
import functools
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.lru_cache(maxsize=None)
def host_x86_without_vnni():
    """True on an x86-64 CPU whose flags name neither AVX512-VNNI nor AVX-VNNI (as scripts/demo.sh).
    There ONNX Runtime's u8 x s8 kernels add pairs of products in saturating int16, so a check of
    an INT8 file against it needs 7-bit weights (`lwc quantize --reduce-range`)."""
    import platform
    if platform.machine() != "x86_64":
        return False
    with open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
    return not ({"avx512_vnni", "avx_vnni"} & flags)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def input_args(ort_dir):
    """--input NAME=FILE arguments for the inputs ort_tool.js saved under ORT_DIR/inputs."""
    args = []
    for f in sorted(os.listdir(os.path.join(ort_dir, "inputs"))):
        args += ["--input", f"{os.path.splitext(f)[0]}={os.path.join(ort_dir, 'inputs', f)}"]
    return args


def ort_run(model, outdir, threads, batch=None, inputs_from=None):
    """Runs MODEL in ONNX Runtime on seeded random inputs (batch) or on the inputs saved by an earlier run."""
    cmd = ["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "run", model, "--threads", str(threads), "--outdir", outdir]
    cmd += input_args(inputs_from) if inputs_from else ["--random-batch", str(batch), "--seed", "7"]
    run(cmd)


def lwc_exec(lwc, model, outdir, threads, inputs_from, reference=False):
    run([lwc, "exec", model, "--threads", str(threads), "--outdir", outdir] + (["--reference"] if reference else [])
        + input_args(inputs_from))


# How much a reference output must differ between the samples of its batch, relative to its largest
# magnitude, for agreement on it to say something about how the inputs were processed. The
# torchvision models with real BN statistics differ by 0.01-1.1, the testdata models by 0.36-1.03.
MIN_SAMPLE_SPREAD = 1e-3


def empty_output_expected(model):
    """The model says its outputs are empty by design (metadata ort_crosscheck.empty_output =
    expected; scripts/gen_op_models.py's NonMaxSuppression with max_output_boxes_per_class 0)."""
    import onnx
    m = onnx.load(model, load_external_data=False)
    return any(p.key == "ort_crosscheck.empty_output" and p.value == "expected" for p in m.metadata_props)


def check_informative(ref_dir, outs, allow_empty=lambda: False):
    """Raises when no float output of the reference run tells its input samples apart:
    max |y_i - y_0| <= MIN_SAMPLE_SPREAD * max |y| (or all zeros for a batch of one).
    torchvision's VisionTransformer starts with a zero classifier, so its logits are 0 for any
    input; googlenet's and shufflenet's, with BN as constructed, varied by 0 and 5e-5 of their
    scale. scripts/gen_torchvision.py now gives all three weights that their outputs depend on."""
    arrays = [np.load(os.path.join(ref_dir, f)) for f in outs]
    if not any(a.size for a in arrays) and not allow_empty():
        # A detector whose score threshold no box passes (torchvision's with random weights).
        raise RuntimeError("every output is empty: agreement would prove nothing; give the model inputs or "
                           "settings for which it outputs something")
    floats = [a.astype(np.float64) for a in arrays if a.dtype.kind == "f" and a.size]
    if not floats:
        return

    def informative(a):
        if a.ndim >= 1 and a.shape[0] >= 2:
            return float(np.max(np.abs(a - a[:1]))) > MIN_SAMPLE_SPREAD * float(np.max(np.abs(a)))
        return bool(np.any(a != 0))
    if not any(informative(a) for a in floats):
        raise RuntimeError(f"the outputs hardly depend on the input (the samples' outputs differ by at most "
                           f"{MIN_SAMPLE_SPREAD:g} of their scale): agreement would prove nothing; give the model "
                           f"weights its output depends on")


def compare_outputs(ref_dir, test_dir, rtol, atol, allow_empty=lambda: False):
    """Worst error of the outputs in TEST_DIR against REF_DIR, as a fraction of the limit; raises when over it.
    allow_empty() is asked only when every output is empty: whether that is by design."""
    worst = 0.0
    outs = [f for f in sorted(os.listdir(ref_dir)) if f.endswith(".npy")]
    if not outs:
        raise RuntimeError("the reference run produced no outputs")
    check_informative(ref_dir, outs, allow_empty)
    for f in outs:
        a = np.load(os.path.join(ref_dir, f))
        p = os.path.join(test_dir, f)
        if not os.path.exists(p):
            raise RuntimeError(f"output {f} is missing")
        b = np.load(p)
        if a.shape != b.shape or a.dtype != b.dtype:
            raise RuntimeError(f"{f}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
        if a.dtype.kind in "iub":
            bad = int(np.sum(a != b))
            if bad:
                raise RuntimeError(f"{f}: {bad} integer elements differ")
            continue
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        err = float(np.max(np.abs(a64 - b64))) if a64.size else 0.0
        limit = rtol * scale + atol
        rel = err / limit if limit > 0 else (0.0 if err == 0 else float("inf"))
        worst = max(worst, rel)
        if not rel <= 1.0:
            raise RuntimeError(f"{f}: max abs diff {err:.3g} at output scale {scale:.3g} (limit {rtol * scale + atol:.3g})")
    return worst


def check(model, lwc, batch, rtol, atol, threads, reference=False):
    with tempfile.TemporaryDirectory() as d:
        ort_dir, lwc_dir = os.path.join(d, "ort"), os.path.join(d, "lwc")
        ort_run(model, ort_dir, threads, batch=batch)
        lwc_exec(lwc, model, lwc_dir, threads, ort_dir, reference)
        return compare_outputs(ort_dir, lwc_dir, rtol, atol, lambda: empty_output_expected(model))


def run_each(models, check_one, label=lambda m: m):
    """check_one(m) for each model, one line each: "ok      LABEL<what check_one returned>" or
    "FAILED  LABEL: why" (an exception fails that model only); then "N passed, M failed".
    Returns the exit code: 1 when any failed."""
    failed = 0
    for m in models:
        try:
            print(f"ok      {label(m)}{check_one(m)}")
        except Exception as e:  # one line per model, keep going
            failed += 1
            print(f"FAILED  {label(m)}: {e}")
    print(f"{len(models) - failed} passed, {failed} failed")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=0.0)
    ap.add_argument("--reference", action="store_true",
                    help="run lwc with its reference kernels only (lwc exec --reference): the plain ONNX semantics of "
                         "each node, e.g. QDQ as written instead of fused integer kernels")
    args = ap.parse_args()
    return run_each(args.models, lambda m: "  (worst error {:.2f} of the limit)".format(
        check(m, args.lwc, args.batch, args.rtol, args.atol, args.threads, args.reference)))


if __name__ == "__main__":
    sys.exit(main())
