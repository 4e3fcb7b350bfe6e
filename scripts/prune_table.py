#!/usr/bin/env python3
"""Top-1 of magnitude-pruned models on the 10 000 Fashion-MNIST test images (lwc engine): each model
x sparsity x scope, and the 2:4 pattern. Prints a Markdown table.

    scripts/prune_table.py [--lwc build/apps/lwc/lwc] [--models mnv2 resnet]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FM = "/usr/share/datasets/fashion-mnist"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--models", nargs="*", default=["mnv2", "resnet"])
    ap.add_argument("--sparsities", nargs="*", type=float, default=[0.5, 0.7, 0.9])
    args = ap.parse_args()
    runs = [(f"{int(100 * s)} % {scope}", ["--sparsity", str(s), "--scope", scope])
            for s in args.sparsities for scope in ("layer", "global")] + [("2:4", ["--pattern", "2:4"])]
    print("| model | FP32 | " + " | ".join(r[0] for r in runs) + " |")
    print("|---|---:|" + "---:|" * len(runs))
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            cells, fp32 = [], None
            for label, extra in runs:
                rep = os.path.join(d, "r.json")
                subprocess.run([args.lwc, "-q", "prune", os.path.join(ROOT, f"testdata/{name}_fmnist.onnx"), "-o",
                                os.path.join(d, "out.onnx"), "--eval", f"{FM}/t10k-images-idx3-ubyte.gz", "--preprocess",
                                os.path.join(ROOT, "testdata/fmnist_sample/preprocess.json"), "--report", rep] + extra,
                               check=True, capture_output=True)
                with open(rep) as f:
                    r = json.load(f)
                fp32 = r["input"]["eval"]["top1"]
                cells.append(f"{100 * r['final']['eval']['top1']:.2f} % ({100 * r['final']['weight_sparsity']:.0f} % zeros)")
            print(f"| {name} | {100 * fp32:.2f} % | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
