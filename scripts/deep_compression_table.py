#!/usr/bin/env python3
"""Deep Compression without retraining, measured: configs/deep_compression.json on the testdata
models (calibration: the first --calib-limit Fashion-MNIST training images; top-1 on the 10 000
test images), then `lwc decode` and ONNX Runtime's top-1 on the decoded model. Also Huffman coding
alone (`lwc encode`) on the INT8 models `lwc quantize` writes. Prints Markdown tables.

    scripts/deep_compression_table.py [--models lenet300 lenet5 mnv2 resnet] [--config configs/deep_compression.json]
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
TEST = [f"{FM}/t10k-images-idx3-ubyte.gz", "--preprocess", PRE]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return r.stdout


def ort_top1(model):
    with open(PRE) as f:
        pre = json.load(f)
    pre.pop("color", None)
    out = run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "eval", model, "--images",
               f"{FM}/t10k-images-idx3-ubyte.gz", "--labels", f"{FM}/t10k-labels-idx1-ubyte.gz", "--preprocess",
               json.dumps(pre), "--threads", "2", "--json"])
    return json.loads(out)["top1"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--models", nargs="*", default=["lenet300", "lenet5", "mnv2", "resnet"])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs/deep_compression.json"))
    ap.add_argument("--calib-limit", type=int, default=1000)
    args = ap.parse_args()
    calib = ["--calib", f"{FM}/train-images-idx3-ubyte.gz", "--calib-limit", str(args.calib_limit)]
    with tempfile.TemporaryDirectory() as d:
        print(f"Pipeline {os.path.relpath(args.config, ROOT)}; calibration: first {args.calib_limit} training images\n")
        print("| model | FP32 file | top-1 | compressed file | ratio | top-1 (lwc) | delta | ORT top-1 (decoded) | weights: raw -> sparse idx -> shared -> Huffman |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for name in args.models:
            src = os.path.join(ROOT, f"testdata/{name}_fmnist.onnx")
            out, rep, dec = (os.path.join(d, f"{name}.{s}") for s in ("dc.onnx", "json", "dec.onnx"))
            # Gates are the config's business; the table wants the numbers either way (--keep-failed).
            subprocess.run([args.lwc, "-q", "run", args.config, src, "-o", out, "--report", rep, "--eval"] + TEST + calib
                           + ["--keep-failed"], capture_output=True, text=True)
            r = json.load(open(rep))
            if not os.path.exists(out):
                print(f"| {name} | failed: {r.get('status')} |")
                continue
            run([args.lwc, "-q", "decode", out, "-o", dec])
            st = r["stages"][-1]["stats"]
            i, f = r["input"], r["final"]
            ratio = r["input_file_bytes"] / os.path.getsize(out)
            print(f"| {name} | {r['input_file_bytes']:,} B | {100 * i['eval']['top1']:.2f} | {os.path.getsize(out):,} B | "
                  f"{ratio:.1f}x | {100 * f['eval']['top1']:.2f} | {100 * (f['eval']['top1'] - i['eval']['top1']):+.2f} | "
                  f"{100 * ort_top1(dec):.2f} | {st['raw_bytes']:,} -> {st['sparse_index_bytes']:,} -> "
                  f"{st['shared_bytes']:,} -> {st['huffman_bytes']:,} B ({st['tensors_coded']} tensors) |", flush=True)
        print("\nHuffman coding alone on INT8 models (`lwc quantize --calib-limit ...` then `lwc encode`):\n")
        print("| model | FP32 file | INT8 file | INT8 + Huffman | gain over INT8 | total ratio | top-1 agreement |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in args.models:
            src = os.path.join(ROOT, f"testdata/{name}_fmnist.onnx")
            q, e, rep = (os.path.join(d, f"{name}.{s}") for s in ("int8.onnx", "int8.huff.onnx", "enc.json"))
            run([args.lwc, "-q", "quantize", src, "-o", q, "--preprocess", PRE, "--bench-batch", "0", "--layer-samples", "0"]
                + calib)
            run([args.lwc, "-q", "encode", q, "-o", e, "--report", rep, "--eval"] + TEST)
            r = json.load(open(rep))
            fs, qs, es = os.path.getsize(src), os.path.getsize(q), os.path.getsize(e)
            print(f"| {name} | {fs:,} | {qs:,} | {es:,} | {qs / es:.3f}x | {fs / es:.2f}x | "
                  f"{100 * r['final']['eval']['top1_agreement']:.2f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
