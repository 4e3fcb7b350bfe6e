#!/usr/bin/env python3
"""Channel pruning on real architectures: for each model, `lwc prune --channels R` (no recovery,
no data needed), then checks that ONNX Runtime loads and runs the result and agrees with lwc's
engine on it (scripts/ort_crosscheck.py), and reports the MACs reduction lwc measured (report
JSON) next to the MACs recounted from the written file (`lwc info --json`). With --latency, also
ONNX Runtime's batch-32 latency before and after (`ort_tool.js bench`, 2 threads; before and after
alternate --repeats times and the lowest median of each counts).

    scripts/channel_prune_check.py [--ratio 0.3] [--latency] MODEL.onnx ...
    scripts/channel_prune_check.py build/test_models/torchvision/*.onnx

Exit code 1 when any model fails to prune, load or agree.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def macs_of(lwc, model):
    rc, out, err = run([lwc, "info", model, "--json"])
    if rc != 0:
        raise RuntimeError(err)
    return json.loads(out)["macs"]


def ort_ms(model, batch, seconds):
    rc, out, err = run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "bench", model, "--batch", str(batch),
                        "--threads", "2", "--seconds", str(seconds), "--json"])
    if rc != 0:
        raise RuntimeError(err)
    return json.loads(out)["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--extra", default="", help="more lwc prune arguments, e.g. '--recover lsq --calib DIR'")
    ap.add_argument("--latency", action="store_true")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bad = 0
    print("| model | groups pruned / left | MACs before | after (report) | after (file) | reduction | ORT loads, agrees |"
          + (" ORT b%d before / after ms | latency drop |" % args.batch if args.latency else ""))
    print("|---|---|---:|---:|---:|---:|---|" + ("---:|---:|" if args.latency else ""))
    with tempfile.TemporaryDirectory() as d:
        for m in args.models:
            name = os.path.splitext(os.path.basename(m))[0]
            out, rep = os.path.join(d, name + ".pruned.onnx"), os.path.join(d, name + ".json")
            rc, _, err = run([args.lwc, "-q", "prune", m, "--channels", str(args.ratio), "-o", out, "--report", rep,
                              "--bench-batch", "0"]
                             + args.extra.split())
            if rc != 0:
                print(f"| {name} | prune failed: {err.strip()} |")
                bad += 1
                continue
            r = json.load(open(rep))
            st = r["stages"][-1]["stats"]
            m0, m1 = r["input"]["macs"], r["final"]["macs"]
            m1_file = macs_of(args.lwc, out)
            rc, o2, e2 = run(["/usr/bin/python3", os.path.join(ROOT, "scripts/ort_crosscheck.py"), "--lwc", args.lwc, out])
            ok = rc == 0 and m1_file == m1
            bad += not ok
            line = (f"| {name} | {st.get('groups_pruned', 0)} / {st.get('groups', 0) - st.get('groups_pruned', 0)} | {m0 / 1e6:.1f} M | "
                    f"{m1 / 1e6:.1f} M | {m1_file / 1e6:.1f} M | {100 * (1 - m1 / m0) if m0 else 0:.1f} % | "
                    f"{'yes' if rc == 0 else 'NO: ' + (o2 + e2).strip().splitlines()[-1]} |")
            if args.latency:
                # Alternating runs, best median of each: robust to other load on the machine.
                b, a = [], []
                for _ in range(args.repeats):
                    b.append(ort_ms(m, args.batch, args.seconds))
                    a.append(ort_ms(out, args.batch, args.seconds))
                before, after = min(b), min(a)
                line += f" {before:.2f} / {after:.2f} | {100 * (1 - after / before):.1f} % |"
            print(line, flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
