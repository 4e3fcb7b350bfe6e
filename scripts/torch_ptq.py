#!/usr/bin/env python3
"""Quantize the Fashion-MNIST test models with PyTorch's own post-training static
quantization, as a reference point for lwc's INT8 accuracy.

For each model in testdata/ the script rebuilds the PyTorch architecture from
scripts/train_fmnist.py, loads the weights from the ONNX file's initializers, checks
that the FP32 PyTorch model reproduces models.json's top-1 on the 10,000 test images,
then quantizes it with FX graph mode (prepare_fx / calibrate / convert_fx) under several
observer settings and evaluates every INT8 model on the same 10,000 images.

Calibration uses the first --calib-samples TRAINING images, in file order, which is
what lwc's `--calib train-images --calib-limit 1000` measures.

Backend: PyTorch's 'fbgemm' engine is used when this torch build has it. Debian's
python3-torch is built without FBGEMM, so there the script falls back to 'onednn', the
other x86 server engine; its default qconfig equals fbgemm's except that activations
use the full 8-bit range (fbgemm reserves one bit, reduce_range=True, because its AVX2
kernels can saturate 16-bit intermediates). The 'fbgemm_default' setting reproduces
fbgemm's qconfig exactly on whichever engine runs.

Examples:
    python3 scripts/torch_ptq.py
    python3 scripts/torch_ptq.py --models lenet5,resnet --calib-samples 500
    python3 scripts/torch_ptq.py --backend qnnpack --out /tmp/torch_ptq_qnnpack.json
"""
import argparse
import copy
import json
import os
import shlex
import sys
import time
import warnings
from collections import Counter

import numpy as np
import onnx
import torch
import torch.fx
from onnx import numpy_helper
from torch.ao.quantization import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    QConfig,
    default_per_channel_weight_observer,
    default_weight_observer,
    get_default_qconfig,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(SCRIPTS_DIR)
sys.path.insert(0, SCRIPTS_DIR)
import train_fmnist  # noqa: E402  (architectures, IDX reader, preprocessing; no side effects)

# torch.onnx drops num_batches_tracked; it only feeds BatchNorm's momentum in training.
IGNORABLE_MISSING_SUFFIXES = (".num_batches_tracked",)
# The FP32 PyTorch model must reproduce models.json's count within this many images.
FP32_TOLERANCE = 2
# Ops that only move or reinterpret data: left out of the quantized/float op census
# because they run on whatever dtype arrives and say nothing about what was quantized.
DATA_MOVEMENT_OPS = {
    "reshape", "view", "permute", "transpose", "flatten", "getitem", "contiguous",
    "size", "getattr", "dequantize", "quantize_per_tensor", "quantize_per_channel",
    "Dropout", "Identity",
}

# torch 1.13 warns on every observer built with reduce_range; the flag is what fbgemm's
# own default qconfig uses, so the warning is noise here.
warnings.filterwarnings("ignore", message="Please use quant_min and quant_max")


# ----------------------------------------------------------------------------- weights

def load_onnx_weights(model, onnx_path):
    """Copy the ONNX initializers into `model`'s state_dict.

    Most initializers keep their PyTorch parameter names. The exception is an nn.Linear
    applied to a 3-D input (the tinyformer blocks): the exporter turns it into
    MatMul(x, W^T) + Add(bias), stores W^T under an anonymous name ("onnx::MatMul_121")
    and keeps only the bias name. Those weights are identified through the Add that
    consumes the MatMul's output. Returns {onnx name: state_dict key} for every renamed
    tensor so the mapping can be audited in the JSON output.
    """
    graph = onnx.load(onnx_path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    state = model.state_dict()
    loaded, renamed = {}, {}
    for name, array in inits.items():
        key, value = name, array
        if name not in state:
            key, value = _linear_weight_behind_matmul(name, array, consumers, inits, state)
            renamed[name] = key + " (transposed)"
        if key in loaded:
            raise RuntimeError(f"{onnx_path}: two initializers map onto {key}")
        if tuple(value.shape) != tuple(state[key].shape):
            raise RuntimeError(f"{onnx_path}: {name} has shape {value.shape}, "
                               f"{key} expects {tuple(state[key].shape)}")
        loaded[key] = torch.from_numpy(np.array(value)).to(state[key].dtype)  # writable copy

    missing = [k for k in state if k not in loaded
               and not k.endswith(IGNORABLE_MISSING_SUFFIXES)]
    if missing:
        raise RuntimeError(f"{onnx_path}: no initializer for {missing}")
    state.update(loaded)
    model.load_state_dict(state, strict=True)
    return renamed


def _linear_weight_behind_matmul(name, array, consumers, inits, state):
    users = consumers.get(name, [])
    if len(users) != 1 or users[0].op_type != "MatMul" or users[0].input[1] != name:
        raise RuntimeError(f"initializer {name!r} is not a state_dict key and not the "
                           f"weight input of a single MatMul; cannot map it")
    adds = consumers.get(users[0].output[0], [])
    bias = [i for a in adds if a.op_type == "Add" for i in a.input
            if i in inits and i.endswith(".bias") and i in state]
    if len(adds) != 1 or len(bias) != 1:
        raise RuntimeError(f"MatMul {users[0].name!r} (weight {name!r}) is not followed by "
                           f"an Add of a known bias; cannot map it")
    key = bias[0][:-len(".bias")] + ".weight"
    if key not in state:
        raise RuntimeError(f"{name!r}: derived key {key!r} is not in the state_dict")
    return key, array.T


# ----------------------------------------------------------------------------- settings

def observer_settings(backend):
    """The observer settings to compare: name -> (description, QConfigMapping).

    Custom settings start from the backend's default mapping and swap the qconfig, so
    they keep its special cases (fixed qparams for sigmoid/tanh/hardsigmoid, float
    LayerNorm weights, per-tensor ConvTranspose weights, reshape reusing input qparams).
    """
    reduce_range = backend == "fbgemm"
    bits = "7-bit" if reduce_range else "8-bit"
    settings = {
        "default": (f"get_default_qconfig_mapping('{backend}'): "
                    + _describe(get_default_qconfig(backend)),
                    get_default_qconfig_mapping(backend)),
    }
    custom = {
        "minmax": (f"MinMaxObserver activations ({bits}), per-channel MinMax weights",
                   QConfig(activation=MinMaxObserver.with_args(reduce_range=reduce_range),
                           weight=default_per_channel_weight_observer)),
        "moving_avg": (f"MovingAverageMinMaxObserver activations ({bits}, c=0.01 per "
                       f"calibration batch), per-channel MinMax weights",
                       QConfig(activation=MovingAverageMinMaxObserver.with_args(
                           reduce_range=reduce_range),
                           weight=default_per_channel_weight_observer)),
        "histogram_per_tensor": (f"HistogramObserver activations ({bits}), per-tensor "
                                 f"MinMax weights",
                                 QConfig(activation=HistogramObserver.with_args(
                                     reduce_range=reduce_range),
                                     weight=default_weight_observer)),
    }
    if backend != "fbgemm":
        # The brief's reference setting: fbgemm's own default qconfig, run on this engine.
        custom["fbgemm_default"] = ("fbgemm's default qconfig on this engine: "
                                    + _describe(get_default_qconfig("fbgemm")),
                                    get_default_qconfig("fbgemm"))
    for name, (text, qconfig) in custom.items():
        settings[name] = (text, _mapping_with(backend, qconfig))
    return settings


def _describe(qconfig):
    act, wt = qconfig.activation(), qconfig.weight()
    scheme = "per-channel" if "channel" in str(wt.qscheme) else "per-tensor"
    return (f"{type(act).__name__} activations (reduce_range={act.reduce_range}), "
            f"{scheme} {type(wt).__name__} weights")


def _mapping_with(backend, qconfig):
    mapping = get_default_qconfig_mapping(backend)
    default = mapping.global_qconfig
    for key, entry in list(mapping.object_type_qconfigs.items()):
        if entry is default:
            mapping.set_object_type(key, qconfig)
        elif entry is not None and entry.activation is default.activation:
            # LayerNorm / ConvTranspose entries: new activation observer, their own weight.
            mapping.set_object_type(key, QConfig(activation=qconfig.activation,
                                                 weight=entry.weight))
    return mapping.set_global(qconfig)


# ----------------------------------------------------------------------------- helpers

@torch.no_grad()
def calibrate(prepared, x, batch):
    for i in range(0, x.shape[0], batch):
        prepared(x[i:i + batch])


class _DtypeRecorder(torch.fx.Interpreter):
    """Runs a GraphModule once and records, per compute node, whether it produced a
    quantized tensor; that is the ground truth of what convert_fx left in float."""

    def __init__(self, gm):
        super().__init__(gm)
        self.quantized, self.floating = Counter(), Counter()

    def run_node(self, node):
        result = super().run_node(node)
        if node.op in ("call_module", "call_function", "call_method"):
            op = self._op_name(node)
            out = result[0] if isinstance(result, (tuple, list)) else result
            if op not in DATA_MOVEMENT_OPS and isinstance(out, torch.Tensor):
                (self.quantized if out.is_quantized else self.floating)[op] += 1
        return result

    def _op_name(self, node):
        if node.op == "call_module":
            return type(self.module.get_submodule(node.target)).__name__
        if node.op == "call_method":
            return node.target
        return getattr(node.target, "__name__", str(node.target))


@torch.no_grad()
def op_census(gm, x):
    recorder = _DtypeRecorder(gm)
    recorder.run(x)
    dequantize = sum(1 for n in gm.graph.nodes if n.target == "dequantize")
    return dict(sorted(recorder.quantized.items())), dict(sorted(recorder.floating.items())), \
        dequantize


def fmt_counts(counts):
    return ", ".join(f"{k}x{v}" if v > 1 else k for k, v in counts.items()) or "none"


def pct(correct, total):
    return 100.0 * correct / total


def logits(model, x):
    """The model's outputs on x, in the batches train_fmnist.evaluate uses."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 500]) for i in range(0, x.shape[0], 500)]).float()


def fidelity(ref, test):
    """(top-1 agreement, output SQNR in dB) of test logits against reference logits, as lwc's
    report computes them: argmax agreement, 10 log10(sum ref^2 / sum (ref - test)^2)."""
    agree = float((ref.topk(5, dim=1).indices[:, 0] == test.topk(5, dim=1).indices[:, 0]).double().mean())
    noise = float(((ref.double() - test.double()) ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10.0 * np.log10(float((ref.double() ** 2).sum()) / noise)
    return agree, sqnr


# ----------------------------------------------------------------------------- main

def quantize_model(name, model, settings, xcal, xte, yte, fp32_top1, fp32_logits, args):
    results = {}
    for setting, (text, mapping) in settings.items():
        torch.manual_seed(args.seed)
        entry = {"description": text}
        try:
            t0 = time.time()
            prepared = prepare_fx(copy.deepcopy(model), mapping, (xcal[:1],))
            calibrate(prepared, xcal, args.calib_batch)
            quantized = convert_fx(prepared)
            entry["calib_seconds"] = round(time.time() - t0, 2)
            t0 = time.time()
            top1, top5 = train_fmnist.evaluate(quantized, xte, yte)
            qlogits = logits(quantized, xte)
            agree, sqnr = fidelity(fp32_logits, qlogits)
            if args.save_predictions:
                np.save(os.path.join(args.save_predictions, f"{name}_{setting}.npy"),
                        qlogits.topk(5, dim=1).indices[:, 0].numpy().astype(np.int64))  # as evaluate() ranks
            entry["eval_seconds"] = round(time.time() - t0, 2)
            q_ops, f_ops, deq = op_census(quantized, xcal[:8])
        except Exception as exc:   # report the failure and keep going with other settings
            entry["error"] = f"{type(exc).__name__}: {exc}"
            results[setting] = entry
            print(f"{name:<10} {setting:<21} FAILED: {entry['error']}", flush=True)
            continue
        entry.update(top1_correct=top1, top1=top1 / len(yte), top5_correct=top5,
                     top1_agreement_with_fp32=agree, output_sqnr_db=round(sqnr, 2),
                     drop_pp=round(pct(fp32_top1 - top1, len(yte)), 2),
                     quantized_ops=q_ops, float_ops=f_ops, dequantize_nodes=deq)
        results[setting] = entry
        print(f"{name:<10} {setting:<21} top1 {top1}/{len(yte)} ({pct(top1, len(yte)):.2f}%) "
              f"drop {entry['drop_pp']:+.2f} pp  agree {100 * agree:.2f}%  SQNR {sqnr:.2f} dB  calib {entry['calib_seconds']:.1f}s "
              f"eval {entry['eval_seconds']:.1f}s  float: {fmt_counts(f_ops)}", flush=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--models", default="all",
                    help=",".join(train_fmnist.MODELS) + " or all (comma list)")
    ap.add_argument("--calib-samples", type=int, default=1000,
                    help="first N training images used for calibration (default 1000)")
    ap.add_argument("--calib-batch", type=int, default=100,
                    help="calibration batch size; only MovingAverageMinMax depends on it")
    ap.add_argument("--settings", default="all",
                    help="comma list of observer settings to run (default all)")
    ap.add_argument("--backend", default=None,
                    help="quantized engine (default fbgemm if this torch has it, else "
                         f"onednn); available: {', '.join(torch.backends.quantized.supported_engines)}")
    ap.add_argument("--testdata", default=os.path.join(REPO_DIR, "testdata"))
    ap.add_argument("--data-dir", default=train_fmnist.DATA_DIR)
    ap.add_argument("--out", default=os.path.join(REPO_DIR, "build", "torch_ptq.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-predictions", metavar="DIR",
                    help="also write each model's and setting's top-1 class per test image as "
                         "DIR/<model>_<setting>.npy (int64), e.g. for a McNemar test against lwc's "
                         "`lwc compare` or another run")
    args = ap.parse_args()
    if args.save_predictions:
        os.makedirs(args.save_predictions, exist_ok=True)

    command = shlex.join([sys.executable] + sys.argv)
    print(f"# {command}", flush=True)
    start = time.time()

    names = train_fmnist.MODELS if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in train_fmnist.MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; valid: {', '.join(train_fmnist.MODELS)}")
    engines = torch.backends.quantized.supported_engines
    backend = args.backend or ("fbgemm" if "fbgemm" in engines else "onednn")
    if backend not in engines:
        ap.error(f"backend {backend!r} is not in this torch build ({', '.join(engines)})")
    settings = observer_settings(backend)
    if args.settings != "all":
        chosen = args.settings.split(",")
        bad = [s for s in chosen if s not in settings]
        if bad:
            ap.error(f"unknown setting(s) {bad}; valid: {', '.join(settings)}")
        settings = {s: settings[s] for s in chosen}

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.backends.quantized.engine = backend
    print(f"# torch {torch.__version__}, engine {backend} (available: {', '.join(engines)}), "
          f"calibration: first {args.calib_samples} training images in batches of "
          f"{args.calib_batch}, {args.threads} threads", flush=True)
    for setting, (text, _) in settings.items():
        print(f"#   {setting}: {text}")

    with open(os.path.join(args.testdata, "models.json")) as f:
        meta = json.load(f)
    train_fmnist.DATA_DIR = args.data_dir
    tr_img, _ = train_fmnist.load_split("train")
    te_img, te_lab = train_fmnist.load_split("test")
    xcal = train_fmnist.preprocess(np.ascontiguousarray(tr_img[:args.calib_samples]))
    xte, yte = train_fmnist.preprocess(te_img), torch.from_numpy(te_lab)

    report = {"command": command, "torch": torch.__version__, "backend": backend,
              "available_engines": engines, "calib_samples": int(xcal.shape[0]),
              "calib_source": "first training images (train-images-idx3-ubyte)",
              "calib_batch": args.calib_batch, "test_images": int(len(yte)),
              "seed": args.seed, "threads": args.threads,
              "settings": {s: text for s, (text, _) in settings.items()}, "models": {}}
    for name in names:
        info = meta[name]
        prep = info["preprocessing"]
        # The evaluation reuses train_fmnist.preprocess; make sure it is the one recorded.
        if (abs(prep["scale"] - train_fmnist.SCALE) > 1e-12 or prep["mean"] != [train_fmnist.MEAN]
                or prep["std"] != [train_fmnist.STD]):
            sys.exit(f"{name}: models.json preprocessing {prep} differs from train_fmnist.py")
        t_model = time.time()
        model = train_fmnist.build(name)
        try:
            renamed = load_onnx_weights(model, os.path.join(args.testdata, info["file"]))
        except RuntimeError as exc:
            sys.exit(f"{name}: cannot load the ONNX weights into the PyTorch model: {exc}")
        model.eval()
        fp32_top1, fp32_top5 = train_fmnist.evaluate(model, xte, yte)
        expected = info["top1_correct"]
        print(f"{name:<10} {'fp32':<21} top1 {fp32_top1}/{len(yte)} "
              f"({pct(fp32_top1, len(yte)):.2f}%)  models.json {expected}"
              + (f"  renamed {len(renamed)} ONNX weights" if renamed else ""), flush=True)
        if abs(fp32_top1 - expected) > FP32_TOLERANCE:
            sys.exit(f"{name}: FP32 PyTorch model scores {fp32_top1} correct, models.json "
                     f"says {expected} (tolerance {FP32_TOLERANCE}); the weights did not "
                     f"load correctly, refusing to report INT8 numbers")

        results = quantize_model(name, model, settings, xcal, xte, yte, fp32_top1, logits(model, xte), args)
        ok = {s: r for s, r in results.items() if "error" not in r}
        # Ties go to the earlier setting, i.e. to the backend default first.
        best = max(ok, key=lambda s: ok[s]["top1_correct"]) if ok else None
        if best:
            print(f"{name:<10} best: {best} ({ok[best]['top1_correct']}/{len(yte)})", flush=True)
        report["models"][name] = {
            "onnx": info["file"], "models_json_top1_correct": expected,
            "fp32": {"top1_correct": fp32_top1, "top1": fp32_top1 / len(yte),
                     "top5_correct": fp32_top5},
            "renamed_weights": renamed, "settings": results, "best": best,
            "seconds": round(time.time() - t_model, 1),
        }

    report["total_seconds"] = round(time.time() - start, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

    print()
    print(f"| model | FP32 top-1 (PyTorch) | best PyTorch INT8 top-1 ({backend}) | setting | drop |")
    print("|---|---|---|---|---|")
    for name, r in report["models"].items():
        fp32 = r["fp32"]["top1_correct"]
        fp32_text = f"{pct(fp32, len(yte)):.2f}% ({fp32})"
        if r["best"] is None:
            print(f"| {name} | {fp32_text} | FX quantization failed | - | - |")
            continue
        best = r["settings"][r["best"]]
        print(f"| {name} | {fp32_text} | {pct(best['top1_correct'], len(yte)):.2f}% "
              f"({best['top1_correct']}) | {r['best']} | {best['drop_pp']:.2f} pp "
              f"({fp32 - best['top1_correct']} images) |")
    print("\ndrop = FP32 top-1 minus INT8 top-1; negative means the INT8 model scored higher. "
          "'best' is picked on the test set itself, so it is an optimistic upper bound.")
    for name, r in report["models"].items():
        best = r["settings"].get(r["best"] or "", {})
        if best.get("float_ops"):
            print(f"{name}: left in float by FX ({r['best']}): {fmt_counts(best['float_ops'])}; "
                  f"{best['dequantize_nodes']} dequantize nodes")
    print(f"wrote {args.out}; total {report['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
