#!/usr/bin/env python3
"""Top-1 of magnitude-pruned models on the 10 000 Fashion-MNIST test images (lwc engine), for the
README's pruning table: model x sparsity x recovery (none / bias / lsq) x schedule (one-shot /
--iters N), plus the 2:4 pattern. Calibration data for bias/lsq: the first --calib-limit training
images. Optionally merges PyTorch's torch.nn.utils.prune results (scripts/torch_prune.py --out).

Prints a Markdown table and writes every run to --out (JSON, default build/prune_table.json).
With --check, exits 1 when a target of the pruning issue, as README states it, is missed:
50 % unstructured with lsq loses <= 0.5 points, one-shot and iterative each; iterative is never
worse than one-shot at the same sparsity and recovery; lsq is more accurate than torch global L1
at every sparsity, one-shot and iterative each (needs --torch; the torch rows must leave the
same layers dense as lwc, i.e. torch_prune.py's default --min-params 1000).
A missed "never worse" line also gives the paired test of the two models (`lwc compare`: images
only one-shot / only iterative gets right, exact McNemar p); the JSON records each run's top-1
agreement and output SQNR against the FP32 model.

    scripts/prune_table.py [--models mnv2 resnet] [--scope global] [--iters 10] [--torch build/torch_prune.json]
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FM = "/usr/share/datasets/fashion-mnist"
# The 10 000 test images, as every run evaluates and every paired comparison reads them.
TEST_DATA = [f"{FM}/t10k-images-idx3-ubyte.gz", "--preprocess", os.path.join(ROOT, "testdata/fmnist_sample/preprocess.json")]


def run(args, model, extra, d, out="out.onnx"):
    rep = os.path.join(d, "r.json")
    t0 = time.time()
    cmd = [args.lwc, "-q", "prune", os.path.join(ROOT, f"testdata/{model}_fmnist.onnx"), "-o", os.path.join(d, out),
           "--eval"] + TEST_DATA + ["--report", rep] + extra
    # An N:M pattern prunes every layer alike (lwc refuses a --scope beside it); lsq options go to
    # the lsq runs only (lwc refuses them without --recover lsq).
    if "--pattern" not in extra:
        cmd += ["--scope", args.scope]
    cmd += shlex.split(args.extra)
    if "--recover" in extra and extra[extra.index("--recover") + 1] == "lsq":
        cmd += shlex.split(args.lsq_extra)
    if "--recover" in extra and extra[extra.index("--recover") + 1] != "none":
        cmd += ["--calib", f"{FM}/train-images-idx3-ubyte.gz", "--calib-limit", str(args.calib_limit)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    with open(rep) as f:
        rj = json.load(f)
    ev = rj["final"]["eval"]
    return {"fp32": rj["input"]["eval"]["top1"], "top1": ev["top1"],
            "top1_agreement": ev["top1_agreement"], "output_sqnr_db": ev["output_sqnr_db"],
            "sparsity": rj["final"]["weight_sparsity"], "seconds": round(time.time() - t0, 1),
            "output": os.path.join(d, out), "command": " ".join(cmd[1:]).replace(ROOT + "/", "")}


def paired(args, a, b):
    """lwc compare of two pruned models on the test images: (images only a gets right, only b, McNemar p)."""
    r = subprocess.run([args.lwc, "-q", "compare", a, b, "--data"] + TEST_DATA + ["--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"lwc compare failed ({r.returncode}): {r.stderr}")
    lab = json.loads(r.stdout)["outputs"][0]["labels"]
    return lab["only_reference_right"], lab["only_candidate_right"], lab["mcnemar_p"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--models", nargs="*", default=["mnv2", "resnet"])
    ap.add_argument("--sparsities", nargs="*", type=float, default=[0.5, 0.7, 0.9])
    ap.add_argument("--recover", nargs="*", default=["none", "bias", "lsq"])
    ap.add_argument("--scope", default="global", choices=["layer", "global"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--calib-limit", type=int, default=1000)
    ap.add_argument("--torch", help="JSON written by scripts/torch_prune.py --out")
    ap.add_argument("--out", default=os.path.join(ROOT, "build/prune_table.json"))
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--extra", default="", help="more lwc prune arguments for every run, e.g. --extra=--min-params=100")
    ap.add_argument("--lsq-extra", default="", help="more lwc prune arguments for the lsq runs, e.g. --lsq-extra=--lsq-cv-rows=8")
    args = ap.parse_args()
    torch_rows = []
    if args.torch:
        with open(args.torch) as f:
            torch_rows = json.load(f)
        # lwc leaves layers under min_params (default 1000) dense; torch_prune.py records its own.
        lwc_min = 1000
        extra = shlex.split(args.extra)
        for i, e in enumerate(extra):
            if e.startswith("--min-params="):
                lwc_min = int(e.split("=", 1)[1])
            elif e == "--min-params" and i + 1 < len(extra):
                lwc_min = int(extra[i + 1])
        mins = {r.get("min_params") for r in torch_rows}
        if mins != {lwc_min}:
            raise SystemExit(f"{args.torch}: torch rows leave layers under {sorted(mins, key=str)} weights dense, "
                             f"lwc under {lwc_min}: not the same layers (rerun scripts/torch_prune.py "
                             f"--min-params {lwc_min})")
    results = []
    failures = []
    schedules = [("1-shot", 1), (f"iters {args.iters}", args.iters)]
    cols = [(rec, s) for rec in args.recover for s in schedules]
    head = "| model | sparsity | " + " | ".join(f"{rec}, {s[0]}" for rec, s in cols)
    if torch_rows:
        head += " | torch global L1"
    print(head + " |")
    print("|---|---:|" + "---:|" * (len(cols) + (1 if torch_rows else 0)))
    with tempfile.TemporaryDirectory() as d:
        for model in args.models:
            for sp in args.sparsities:
                cells, row = [], {}
                for rec, (sname, n) in cols:
                    res = run(args, model, ["--sparsity", str(sp), "--iters", str(n), "--recover", rec], d,
                              f"{model}_{sp}_{rec}_{n}.onnx")
                    res.update(model=model, target=sp, recover=rec, iters=n, scope=args.scope)
                    results.append(res)
                    row[(rec, n)] = res
                    cells.append(f"{100 * res['top1']:.2f}")
                fp32 = results[-1]["fp32"]
                line = f"| {model} (FP32 {100 * fp32:.2f}) | {int(round(100 * sp))} % | " + " | ".join(cells)
                t = [r for r in torch_rows if r["model"] == model and r["method"] == "torch_global_l1" and
                     abs(r["sparsity"] - sp) < 1e-6]
                if torch_rows:
                    line += f" | {100 * t[0]['top1']:.2f}" if t else " | -"
                print(line + " |", flush=True)
                for rec in args.recover:
                    one, it = row[(rec, 1)], row[(rec, args.iters)]
                    if it["top1"] < one["top1"]:
                        a, b, pv = paired(args, one["output"], it["output"])
                        it["vs_one_shot"] = {"only_one_shot_right": a, "only_iterative_right": b, "mcnemar_p": pv}
                        failures.append(f"{model} {sp} {rec}: iters {args.iters} {it['top1']:.4f} < one-shot {one['top1']:.4f} "
                                        f"({a} images only one-shot gets right, {b} only iterative: McNemar p = {pv:.2f})")
                if "lsq" in args.recover:
                    # README claims both for each schedule, so each schedule is checked on its own.
                    for sname, n in schedules:
                        lsq = row[("lsq", n)]["top1"]
                        if abs(sp - 0.5) < 1e-6 and fp32 - lsq > 0.005 + 1e-9:
                            failures.append(f"{model} 50 % lsq {sname} loses {100 * (fp32 - lsq):.2f} points (> 0.5)")
                        if t and lsq <= t[0]["top1"]:
                            failures.append(f"{model} {sp} lsq {sname} {lsq:.4f} <= torch global L1 {t[0]['top1']:.4f}")
            # 2:4, one step by definition.
            cells = []
            for rec in args.recover:
                res = run(args, model, ["--pattern", "2:4", "--recover", rec], d)
                res.update(model=model, target="2:4", recover=rec, iters=1, scope=args.scope)
                results.append(res)
                cells.append(f"{rec}: {100 * res['top1']:.2f}")
            print(f"| {model} | 2:4 | " + ", ".join(cells) + " |", flush=True)
    for r in results:
        r.pop("output", None)  # a file in the temporary folder, gone by now
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    for msg in failures:
        print("MISSED:", msg)
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
