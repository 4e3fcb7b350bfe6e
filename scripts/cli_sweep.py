#!/usr/bin/env python3
"""Runs lwc commands over many small real-world ONNX files and checks that each one either
succeeds or fails cleanly: exit code 0 with an output file that lwc loads again, or exit code 1
with one "lwc: error: ..." line naming the problem. Exit code 2 (an internal error: lwc produced a
model the ONNX checker rejects, or an exception it did not expect) or a crash fails the sweep.

    scripts/cli_sweep.py [--lwc build/apps/lwc/lwc] [DIR ...]

Default DIRs: Debian libonnx-testdata's pytorch-converted and pytorch-operator cases (PyTorch
exports from IR 3 / opset 6 on, with Constant nodes, old broadcasting attributes, and the like).
Commands: `lwc fuse`, `lwc prune --sparsity 0.5 --min-params 0`, `lwc prune --channels 0.5`,
`lwc quantize --calib CASE_DIR` (its test_data_set_* as calibration data) and `lwc quantize --mode dynamic`.
"""
import argparse
import glob
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = "/usr/share/libonnx-testdata/data"
COMMANDS = {
    "fuse": ["fuse"],
    "prune": ["prune", "--sparsity", "0.5", "--min-params", "0"],
    "channels": ["prune", "--channels", "0.5", "--bench-batch", "0"],
    # {case}: the case's folder, whose test_data_set_* serve as calibration data.
    "quantize": ["quantize", "--calib", "{case}", "--bench-batch", "0", "--layer-samples", "0"],
    "dynamic": ["quantize", "--mode", "dynamic", "--bench-batch", "0"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="*", default=[f"{DATA}/pytorch-converted", f"{DATA}/pytorch-operator"])
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    args = ap.parse_args()
    models = sorted(m for d in args.dirs for m in glob.glob(os.path.join(d, "*", "model.onnx")))
    if not models:
        print(f"cli_sweep: no model.onnx under {' '.join(args.dirs)}", file=sys.stderr)
        return 1
    bad, counts = [], {"written": 0, "clean error": 0}
    with tempfile.TemporaryDirectory() as d:
        for m in models:
            case = os.path.basename(os.path.dirname(m))
            for name, cmd in COMMANDS.items():
                out = os.path.join(d, f"{case}.{name}.onnx")
                argv = [a.replace("{case}", os.path.dirname(m)) for a in cmd]
                r = subprocess.run([args.lwc, "-q"] + argv + [m, "-o", out], capture_output=True, text=True, timeout=300)
                err = r.stderr.strip().splitlines()
                if r.returncode == 0:
                    back = subprocess.run([args.lwc, "info", out], capture_output=True, text=True)
                    if back.returncode != 0:
                        bad.append(f"{case} {name}: wrote a file lwc cannot load: {back.stderr.strip()}")
                    counts["written"] += 1
                elif r.returncode == 1 and len(err) == 1 and err[0].startswith("lwc: error: ") and not os.path.exists(out):
                    counts["clean error"] += 1
                else:
                    bad.append(f"{case} {name}: exit {r.returncode}: {' | '.join(err)[:300]}")
    print(f"{len(models)} models x {len(COMMANDS)} commands: {counts['written']} written, "
          f"{counts['clean error']} clean one-line errors, {len(bad)} bad")
    for b in bad:
        print("BAD  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
