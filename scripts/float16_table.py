#!/usr/bin/env python3
"""float16 weights, measured: `lwc float16` on the testdata models (top-1 on the 10 000 Fashion-MNIST
test images in lwc's engine, with the report's agreement and output SQNR against the float32 model),
then ONNX Runtime's top-1 on the written file. Prints a Markdown table.

    scripts/float16_table.py [--lwc build/apps/lwc/lwc] [--models lenet300 lenet5 mnv2 resnet tinyformer]
"""
import argparse
import json
import os
import tempfile

# The data paths, the runner and ONNX Runtime's top-1, as the Deep Compression table measures them.
from deep_compression_table import ROOT, TEST, ort_top1, run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--models", nargs="*", default=["lenet300", "lenet5", "mnv2", "resnet", "tinyformer"])
    args = ap.parse_args()
    print("| model | FP32 file | float16 file | ratio | top-1 FP32 | top-1 float16 (lwc) | ORT top-1 | "
          "only FP32 / only float16 right | agreement | output SQNR | tensors: converted / kept / not smaller | values to 0 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as d:
        for name in args.models:
            src = os.path.join(ROOT, f"testdata/{name}_fmnist.onnx")
            out, rep = os.path.join(d, f"{name}.f16.onnx"), os.path.join(d, f"{name}.json")
            run([args.lwc, "-q", "float16", src, "-o", out, "--report", rep, "--eval"] + TEST)
            r = json.load(open(rep))
            i, f, st = r["input"]["eval"], r["final"]["eval"], r["stages"][-1]["stats"]
            fs, hs = os.path.getsize(src), os.path.getsize(out)
            print(f"| {name} | {fs:,} B | {hs:,} B | {fs / hs:.2f}x | {100 * i['top1']:.2f} | {100 * f['top1']:.2f} | "
                  f"{100 * ort_top1(out):.2f} | {f['only_input_right']} / {f['only_this_right']} | "
                  f"{100 * f['top1_agreement']:.2f} % | {f['output_sqnr_db']:.1f} dB | "
                  f"{st['tensors_converted']} / {st['tensors_kept_float32']} / {st['tensors_not_smaller']} | "
                  f"{st['values_flushed_to_zero']} |", flush=True)


if __name__ == "__main__":
    main()
