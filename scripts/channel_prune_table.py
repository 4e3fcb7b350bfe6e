#!/usr/bin/env python3
"""Channel pruning (`lwc prune --macs-reduction F`) on the Fashion-MNIST models: top-1 on the 10 000
test images with recovery none / lsq of the same pruned channels (calibration, which also chooses
the channels: the first --calib-limit training images), the
MACs and parameters lwc reports, and ONNX Runtime's latency at batch 32 before and after (2
threads; the unpruned and pruned models alternate --repeats times, lowest median of each).
Prints a Markdown table; --check exits 1 when the 30 % row with lsq loses more than 2 points or
ONNX Runtime's latency drops less than 20 %.

    scripts/channel_prune_table.py [--models mnv2 resnet] [--reductions 0.2 0.3 0.5]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FM = "/usr/share/datasets/fashion-mnist"
PRE = os.path.join(ROOT, "testdata/fmnist_sample/preprocess.json")


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def ort_ms(model, batch, seconds):
    out = run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "bench", model, "--batch", str(batch), "--threads",
               "2", "--seconds", str(seconds), "--json"])
    return json.loads(out)["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--models", nargs="*", default=["mnv2", "resnet"])
    ap.add_argument("--reductions", nargs="*", type=float, default=[0.2, 0.3, 0.5])
    ap.add_argument("--calib-limit", type=int, default=1000)
    ap.add_argument("--importance", default="l1")
    ap.add_argument("--seconds", type=float, default=2)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    fails = []
    print("| model | MACs target | MACs after | params after | top-1 none | top-1 lsq | delta lsq | ORT b32 ms before / after | latency drop |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            src = os.path.join(ROOT, f"testdata/{name}_fmnist.onnx")
            for red in args.reductions:
                res = {}
                for rec in ("none", "lsq"):
                    out, rep = os.path.join(d, f"{rec}.onnx"), os.path.join(d, f"{rec}.json")
                    cmd = [args.lwc, "-q", "prune", src, "--macs-reduction", str(red), "--importance", args.importance,
                           "--recover", rec, "-o", out, "--report", rep, "--eval", f"{FM}/t10k-images-idx3-ubyte.gz",
                           "--preprocess", PRE]
                    # Both runs get the calibration data: with --macs-reduction it also chooses which
                    # groups' channels go, so without it the "none" run would prune other channels
                    # than the lsq run whose MACs and parameters the row shows (until 2026-12-07).
                    cmd += ["--calib", f"{FM}/train-images-idx3-ubyte.gz", "--calib-limit", str(args.calib_limit)]
                    run(cmd)
                    res[rec] = json.load(open(rep))
                i, n, l = res["lsq"]["input"], res["none"]["final"], res["lsq"]["final"]
                if (n["macs"], n["params"]) != (l["macs"], l["params"]):
                    raise SystemExit(f"{name} -{100 * red:.0f} %: none and lsq pruned different channels "
                                     f"(MACs {n['macs']} vs {l['macs']}, params {n['params']} vs {l['params']})")
                b, a = [], []
                for _ in range(args.repeats):
                    b.append(ort_ms(src, 32, args.seconds))
                    a.append(ort_ms(os.path.join(d, "lsq.onnx"), 32, args.seconds))
                before, after = min(b), min(a)
                drop = 1 - after / before
                delta = l["eval"]["top1"] - i["eval"]["top1"]
                print(f"| {name} (FP32 {100 * i['eval']['top1']:.2f}) | -{100 * red:.0f} % | "
                      f"{l['macs'] / 1e6:.2f} M (-{100 * (1 - l['macs'] / i['macs']):.1f} %) | "
                      f"{l['params'] / 1e3:.1f} k (-{100 * (1 - l['params'] / i['params']):.1f} %) | "
                      f"{100 * n['eval']['top1']:.2f} | {100 * l['eval']['top1']:.2f} | {100 * delta:+.2f} | "
                      f"{before:.2f} / {after:.2f} | {100 * drop:.1f} % |", flush=True)
                if abs(red - 0.3) < 1e-6:
                    if delta < -0.02:
                        fails.append(f"{name}: 30 % MACs with lsq loses {-100 * delta:.2f} points (> 2)")
                    if drop < 0.2:
                        fails.append(f"{name}: ONNX Runtime latency drops {100 * drop:.1f} % (< 20 %)")
    for f in fails:
        print("MISSED:", f)
    return 1 if args.check and fails else 0


if __name__ == "__main__":
    sys.exit(main())
