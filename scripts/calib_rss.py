#!/usr/bin/env python3
"""Calibration memory must not grow with the number of samples: runs `lwc calibrate` on N1 and N2
Fashion-MNIST training images (default 100 and 2000, i.e. 1 and 20 batches) and compares the peak
RSS of the two runs (limit: +10 %). Measured on mnv2_fmnist: 124.5 MB at 100 and 125.1 MB at 2000
samples (2026-12-06; earlier builds: 117.0, 116.7 and 117.0 MB at 100, 200 and 2000; before the buffer pool reused buffers across sizes and oneDNN's blocked
copies came from that pool: 123 / 141 / 155 MB).

    scripts/calib_rss.py [--lwc build/apps/lwc/lwc] [--model testdata/mnv2_fmnist.onnx]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def peak_mb(cmd):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts/peak_rss.py"), "--"] + cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed: {r.stdout}{r.stderr}")
    return float(re.search(r"peak RSS ([0-9.]+) MB", r.stdout).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--model", default=os.path.join(ROOT, "testdata/mnv2_fmnist.onnx"))
    ap.add_argument("--max-growth", type=float, default=0.10)
    ap.add_argument("--samples", type=int, nargs=2, default=[100, 2000])
    args = ap.parse_args()
    data = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    pre = os.path.join(ROOT, "testdata/fmnist_sample/preprocess.json")
    mb = {}
    with tempfile.TemporaryDirectory() as d:
        for n in args.samples:
            mb[n] = peak_mb([args.lwc, "calibrate", args.model, "--calib", data, "--preprocess", pre,
                             "--calib-samples", str(n), "-o", os.path.join(d, f"s{n}.json"), "--threads", "2"])
            print(f"{n:5d} samples: peak RSS {mb[n]:.1f} MB")
    lo, hi = args.samples
    growth = mb[hi] / mb[lo] - 1
    print(f"growth {100 * growth:+.1f} % (limit {100 * args.max_growth:.0f} %)")
    return 0 if growth <= args.max_growth else 1


if __name__ == "__main__":
    sys.exit(main())
