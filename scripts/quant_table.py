#!/usr/bin/env python3
"""Accuracy of lwc's INT8 static quantization: every model x calibrator, calibrated on Fashion-MNIST
training images, evaluated on the 10 000 test images in the lwc engine and in ONNX Runtime.
Prints a Markdown table (the one in the README) and writes the raw numbers as JSON.

    scripts/quant_table.py [--lwc build/apps/lwc/lwc] [--calib-samples 1000] [--out build/quant_table.json]
                           [--reduce-range auto|yes|no]

ONNX Runtime's u8 x s8 kernels saturate their int16 intermediates on x86 CPUs without VNNI
(measured on an AVX2-only EPYC: mnv2 INT8 90.63 % in ORT vs 92.51 % exact), so the ORT agreement
check is only meaningful there with 7-bit weights. `--reduce-range auto` (default): on a CPU
without VNNI every model is quantized twice, with 8-bit weights for the lwc columns and the drop
check (lwc's engine is exact on any CPU) and with `lwc quantize --reduce-range` for the ONNX
Runtime column and the agreement check (lwc and ORT on that same 7-bit file); a note says so.
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
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def ort_top1(model):
    with open(PRE) as f:
        pre = json.load(f)
    pre.pop("color", None)
    out = run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "eval", model, "--images", f"{FM}/t10k-images-idx3-ubyte.gz",
               "--labels", f"{FM}/t10k-labels-idx1-ubyte.gz", "--preprocess", json.dumps(pre), "--threads", "2", "--json"])
    return json.loads(out)["top1"]


def cpu_has_vnni():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--calib-samples", type=int, default=1000)
    ap.add_argument("--models", nargs="*", default=["lenet300", "lenet5", "mnv2", "resnet", "tinyformer"])
    ap.add_argument("--calibrators", nargs="*", default=["minmax", "percentile", "entropy", "mse"])
    ap.add_argument("--extra", nargs="*", action="extend", default=[],
                    help="extra lwc quantize arguments, one per --extra=ARG (repeatable)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build/quant_table.json"))
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every drop is <= --max-drop points and lwc and ORT agree within --max-diff points")
    ap.add_argument("--max-drop", type=float, default=0.5)
    ap.add_argument("--max-diff", type=float, default=0.1)
    ap.add_argument("--reduce-range", choices=["auto", "yes", "no"], default="auto",
                    help="7-bit weights (lwc quantize --reduce-range); auto: when this CPU has no VNNI")
    args = ap.parse_args()
    reduce = args.reduce_range == "yes" or (args.reduce_range == "auto" and not cpu_has_vnni())
    if args.reduce_range == "yes":
        print("note: 7-bit weights (--reduce-range) everywhere, as asked", flush=True)
        args.extra = args.extra + ["--reduce-range"]
    elif reduce:
        print("note: this CPU has no VNNI, where ONNX Runtime's u8 x s8 kernels saturate with 8-bit weights: the ORT "
              "column and the agreement check use a second file quantized with --reduce-range (7-bit weights)",
              flush=True)
    second = reduce and args.reduce_range == "auto"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            model = os.path.join(ROOT, "testdata", f"{name}_fmnist.onnx")
            for cal in args.calibrators:
                def quantize(stem, extra):
                    """Quantizes `model` to d/stem.onnx; returns (path, lwc's report)."""
                    out, rep = os.path.join(d, f"{stem}.onnx"), os.path.join(d, f"{stem}.json")
                    run([args.lwc, "-q", "quantize", model, "-o", out, "--calibrator", cal,
                         "--calib", f"{FM}/train-images-idx3-ubyte.gz", "--calib-limit", str(args.calib_samples),
                         "--eval", f"{FM}/t10k-images-idx3-ubyte.gz", "--preprocess", PRE, "--report", rep,
                         "--layer-samples", "0", "--bench-batch", "0"] + extra)
                    with open(rep) as f:
                        return out, json.load(f)

                out, r = quantize(f"{name}_{cal}", args.extra)
                ort_model, lwc_for_ort = out, r["final"]["eval"]["top1"]
                if second:
                    ort_model, r7 = quantize(f"{name}_{cal}_7bit", ["--reduce-range"] + args.extra)
                    lwc_for_ort = r7["final"]["eval"]["top1"]
                row = {"model": name, "calibrator": cal, "fp32_top1": r["input"]["eval"]["top1"],
                       "int8_top1": r["final"]["eval"]["top1"], "ort_int8_top1": ort_top1(ort_model),
                       "top1_agreement_with_fp32": r["final"]["eval"]["top1_agreement"],
                       "output_sqnr_db": r["final"]["eval"]["output_sqnr_db"],
                       "lwc_top1_of_ort_file": lwc_for_ort, "ort_file_reduce_range": reduce,
                       "input_bytes": r["input"]["file_bytes"], "output_bytes": r["final"]["file_bytes"],
                       "weight_bytes_fp32": r["input"]["weight_bytes"], "weight_bytes_int8": r["final"]["weight_bytes"]}
                rows.append(row)
                print(f"{name:10s} {cal:10s} fp32 {100*row['fp32_top1']:.2f}  lwc int8 {100*row['int8_top1']:.2f}  "
                      f"ORT int8 {100*row['ort_int8_top1']:.2f}  drop {100*(row['fp32_top1']-row['int8_top1']):+.2f}  "
                      f"agree {100*row['top1_agreement_with_fp32']:.2f}%  SQNR {row['output_sqnr_db']:.2f} dB", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)
    ort_head = "INT8 top-1 (ORT on the 7-bit file; lwc on it)" if second else "INT8 top-1 (ORT)"
    print(f"\n| model | calibrator | FP32 top-1 | INT8 top-1 (lwc) | {ort_head} | drop | file bytes FP32 -> INT8 |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        ort = f"{100 * r['ort_int8_top1']:.2f} %"
        if second:
            ort += f" ({100 * r['lwc_top1_of_ort_file']:.2f} %)"
        print(f"| {r['model']} | {r['calibrator']} | {100*r['fp32_top1']:.2f} % | {100*r['int8_top1']:.2f} % | {ort} | "
              f"{100*(r['fp32_top1']-r['int8_top1']):.2f} | "
              f"{r['input_bytes']:,} -> {r['output_bytes']:,} ({r['input_bytes']/r['output_bytes']:.2f}x) |")
    if args.check:
        bad = [r for r in rows if 100 * (r["fp32_top1"] - r["int8_top1"]) > args.max_drop + 1e-9
               or 100 * abs(r["lwc_top1_of_ort_file"] - r["ort_int8_top1"]) > args.max_diff + 1e-9]
        for r in bad:
            print(f"FAILED {r['model']} {r['calibrator']}: drop {100 * (r['fp32_top1'] - r['int8_top1']):.2f}, "
                  f"lwc vs ORT on the same file {100 * (r['lwc_top1_of_ort_file'] - r['ort_int8_top1']):+.2f} points")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
