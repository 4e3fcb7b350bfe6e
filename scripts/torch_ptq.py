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

Top-1 is the lowest class index among the highest logits (np.argmax), as lwc ranks
(AccuracyMeter, argmaxRows), ONNX Runtime's eval and `lwc compare` do: INT8 logits are
often tied, and torch.topk does not promise which of two tied classes comes first. A row
with a NaN logit is no prediction (class -1, wrong), as in lwc. Top-5 counts the label
when fewer than 5 classes score higher or tie with it at a lower index, the same rule.
The fidelity figures (top-1 agreement with the FP32 model, logit SQNR) use the same top-1.

--lwc-compare also quantizes every model with lwc (`lwc quantize` with each of its
calibrators, on the same first --calib-samples training images, given to lwc the way
scripts/quant_table.py gives them: the IDX file, --calib-limit, testdata's
preprocess.json), runs each INT8 file with `lwc exec` on the preprocessed test images,
and prints the README's paired table: lwc's default (minmax) against PyTorch's default
and lwc's best calibrator against PyTorch's best setting (best = highest top-1 on the
test set, ties to the earlier one), with the images only one of the two gets right and
the exact two-sided McNemar p (binomial, as lwc's mcnemarExactP), and the fidelity table
(top-1 agreement % / logit SQNR dB against each side's own FP32 model).

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
    python3 scripts/torch_ptq.py --lwc-compare --lwc build/apps/lwc/lwc
"""
import argparse
import copy
import json
import os
import math
import shlex
import subprocess
import sys
import tempfile
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
    """The model's outputs on x as float32, in batches of 500 (train_fmnist.evaluate's)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(x[i:i + 500]) for i in range(0, x.shape[0], 500)]).float()


def top1_classes(scores):
    """Predicted class per row: the lowest index among the row's maxima (np.argmax, as lwc's
    argmaxRows); -1 for a row with a NaN, which lwc counts as no prediction. int64 numpy array."""
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    pred = np.argmax(s, axis=1).astype(np.int64)
    pred[np.isnan(s).any(axis=1)] = -1
    return pred


def correct_counts(scores, labels):
    """(top-1, top-5 correct) with lwc's AccuracyMeter rule: the label's rank is the number of
    classes scoring higher or tying with it at a lower index; NaN rows are wrong."""
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    y = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    sy = s[np.arange(len(y)), y][:, None]
    idx = np.arange(s.shape[1])[None, :]
    rank = ((s > sy) | ((s == sy) & (idx < y[:, None]))).sum(axis=1)
    valid = ~np.isnan(s).any(axis=1)
    return int(((rank == 0) & valid).sum()), int(((rank < 5) & valid).sum())


def evaluate(model, x, y):
    """(top-1 correct, top-5 correct, logits) of `model` on x; replaces train_fmnist.evaluate,
    whose topk(5).indices[:, 0] breaks ties between equal logits arbitrarily."""
    out = logits(model, x)
    top1, top5 = correct_counts(out, y)
    return top1, top5, out


def fidelity(ref, test):
    """(top-1 agreement, output SQNR in dB) of test logits against reference logits, as lwc's
    report computes them: argmax agreement (lowest index wins ties), 10 log10(sum ref^2 /
    sum (ref - test)^2)."""
    agree = float(np.mean(top1_classes(ref) == top1_classes(test)))
    noise = float(((ref.double() - test.double()) ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10.0 * np.log10(float((ref.double() ** 2).sum()) / noise)
    return agree, sqnr


def mcnemar_exact_p(only_a, only_b):
    """Exact two-sided McNemar p: 2 * P(X <= min) for X ~ Binomial(only_a + only_b, 1/2), capped
    at 1; the same sum in log space as lwc's mcnemarExactP."""
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    lg_n1, log_half_n = math.lgamma(n + 1.0), n * math.log(0.5)
    tail = sum(math.exp(lg_n1 - math.lgamma(i + 1.0) - math.lgamma(n - i + 1.0) + log_half_n)
               for i in range(k + 1))
    return min(1.0, 2.0 * tail)


def p_text(p):
    return "p < 0.001" if p < 0.001 else (f"p = {p:.2f}" if p >= 0.01 else f"p = {p:.3f}")


# ----------------------------------------------------------------------------- lwc side

FMNIST_PREPROCESS = os.path.join(REPO_DIR, "testdata", "fmnist_sample", "preprocess.json")
LWC_CALIBRATORS = ("minmax", "percentile", "entropy", "mse")   # lwc's default first


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def lwc_side(name, onnx_path, xte_npy, yte, args, workdir):
    """Quantize `onnx_path` with lwc under each calibrator, as scripts/quant_table.py does, and
    run every INT8 file with `lwc exec` on the preprocessed test images. Returns
    {calibrator: {top1_correct, top1_agreement_with_fp32, output_sqnr_db, predictions, ...}}.

    The per-image predictions come from `lwc exec` on the images preprocessed by
    train_fmnist.preprocess; lwc's report evaluates the same file on the IDX file with
    testdata's preprocess.json. The two counts must agree, else the run stops."""
    data = args.data_dir
    input_name = onnx.load(onnx_path).graph.input[0].name
    out = {}
    for cal in args.lwc_calibrators:
        stem = os.path.join(workdir, f"{name}_{cal}")
        t0 = time.time()
        cmd = [args.lwc, "-q", "quantize", onnx_path, "-o", stem + ".onnx", "--calibrator", cal,
               "--calib", os.path.join(data, "train-images-idx3-ubyte.gz"),
               "--calib-limit", str(args.calib_samples),
               "--eval", os.path.join(data, "t10k-images-idx3-ubyte.gz"),
               "--preprocess", FMNIST_PREPROCESS, "--report", stem + ".json",
               "--layer-samples", "0", "--bench-batch", "0", "--threads", str(args.threads)]
        _run(cmd)
        with open(stem + ".json") as f:
            ev = json.load(f)["final"]["eval"]
        _run([args.lwc, "-q", "exec", stem + ".onnx", "--input", f"{input_name}={xte_npy}",
              "-o", stem + "_out", "--threads", str(args.threads)])
        outs = sorted(f for f in os.listdir(stem + "_out") if f.endswith(".npy"))
        if len(outs) != 1:
            raise RuntimeError(f"{name} {cal}: lwc exec wrote {outs}, expected one output")
        scores = np.load(os.path.join(stem + "_out", outs[0]))
        pred = top1_classes(scores)
        correct = int((pred == yte.numpy()).sum())
        report_correct = int(round(ev["top1"] * ev["samples"]))
        if correct != report_correct or ev["samples"] != len(yte):
            raise RuntimeError(f"{name} {cal}: lwc exec predictions give {correct} correct, lwc's "
                               f"report {report_correct} of {ev['samples']}: the two inputs differ")
        out[cal] = {"top1_correct": correct, "top1": correct / len(yte),
                    "top1_agreement_with_fp32": ev["top1_agreement"],
                    "output_sqnr_db": round(float(ev["output_sqnr_db"]), 2),
                    "seconds": round(time.time() - t0, 1), "predictions": pred,
                    "command": shlex.join(cmd[1:]).replace(REPO_DIR + "/", "")}
        print(f"{name:<10} lwc {cal:<17} top1 {correct}/{len(yte)} ({pct(correct, len(yte)):.2f}%)  "
              f"agree {100 * ev['top1_agreement']:.2f}%  SQNR {float(ev['output_sqnr_db']):.2f} dB  "
              f"{out[cal]['seconds']:.1f}s", flush=True)
    return out


def paired(pred_a, pred_b, labels):
    """(images only a gets right, only b, exact McNemar p)."""
    y = labels.numpy()
    ra, rb = pred_a == y, pred_b == y
    only_a, only_b = int((ra & ~rb).sum()), int((rb & ~ra).sum())
    return only_a, only_b, mcnemar_exact_p(only_a, only_b)


SETTING_TEXT = {"default": "default", "minmax": "minmax", "moving_avg": "moving average",
                "histogram_per_tensor": "histogram, per-tensor weights",
                "fbgemm_default": "fbgemm default"}


def compare_with_lwc(name, lwc, lwc_preds, results, predictions, best, args, yte):
    """Pairs lwc's default and best calibrator with PyTorch's default and best setting (best =
    most test images right, ties to the earlier one) and every PyTorch setting with lwc's
    default and best. Returns the JSON entry; prints one line per pair."""
    ldef = args.lwc_calibrators[0]
    lbest = max(lwc, key=lambda c: lwc[c]["top1_correct"])   # ties: the earlier calibrator
    pdef = "default" if "default" in predictions else next(iter(predictions), None)
    entry = {"calibrators": lwc, "default": ldef, "best": lbest,
             "pytorch_default": pdef, "pytorch_best": best}
    if pdef is None:
        return entry
    for key, lc in (("lwc_default", ldef), ("lwc_best", lbest)):
        vs = {}
        for setting, pred in predictions.items():
            a, b, pv = paired(lwc_preds[lc], pred, yte)
            vs[setting] = {"only_lwc_right": a, "only_pytorch_right": b, "mcnemar_p": pv}
        entry[f"{key}_vs_pytorch"] = vs
        print(f"{name:<10} lwc {key[4:]} {lc} ({lwc[lc]['top1_correct']}) vs PyTorch: " + "; ".join(
            f"{s} ({results[s]['top1_correct']}) {v['only_lwc_right']}/{v['only_pytorch_right']} "
            f"{p_text(v['mcnemar_p'])}" for s, v in vs.items()), flush=True)
    entry["default_pair"] = entry["lwc_default_vs_pytorch"][pdef]
    entry["best_pair"] = entry["lwc_best_vs_pytorch"][best]
    return entry


def print_lwc_tables(report, backend, n, args):
    """The README's two tables: paired top-1 against PyTorch, and fidelity to each FP32 model."""
    nl, ns = len(args.lwc_calibrators), len(report["settings"])
    ldef = args.lwc_calibrators[0]
    print(f"\nlwc against PyTorch ({backend}); top-1 % on the {n} test images, correct images in "
          f"brackets; only lwc / only PyTorch right: images only one of the two INT8 models gets "
          f"right, exact two-sided McNemar p:\n")
    print(f"| model | lwc default ({ldef}) | PyTorch default | only lwc / only PyTorch right | "
          f"lwc best of {nl} calibrators | PyTorch best of {ns} settings | "
          f"only lwc / only PyTorch right |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in report["models"].items():
        c = r.get("lwc", {})
        if not c.get("pytorch_best"):
            print(f"| {name} | - | FX quantization failed | - | - | - | - |")
            continue
        lw, st = c["calibrators"], r["settings"]
        d, b = c["default_pair"], c["best_pair"]
        ld, pd, lb, pb = lw[c["default"]], st[c["pytorch_default"]], lw[c["best"]], st[c["pytorch_best"]]
        print(f"| {name} | {pct(ld['top1_correct'], n):.2f} ({ld['top1_correct']}) | "
              f"{pct(pd['top1_correct'], n):.2f} ({pd['top1_correct']}) | "
              f"{d['only_lwc_right']} / {d['only_pytorch_right']}, {p_text(d['mcnemar_p'])} | "
              f"{pct(lb['top1_correct'], n):.2f} {c['best']} | "
              f"{pct(pb['top1_correct'], n):.2f} {SETTING_TEXT.get(c['pytorch_best'], c['pytorch_best'])} | "
              f"{b['only_lwc_right']} / {b['only_pytorch_right']}, {p_text(b['mcnemar_p'])} |")
    ps = [v["mcnemar_p"] for r in report["models"].values() if r.get("lwc", {}).get("pytorch_best")
          for v in (r["lwc"]["default_pair"], r["lwc"]["best_pair"])]
    if ps:
        print(f"\nsmallest p in the table: {min(ps):.3f}")

    print(f"\nFidelity: top-1 agreement % / logit SQNR dB against each side's own FP32 model, "
          f"on the {n} test images:\n")
    print(f"| model | lwc {ldef} (default) | lwc best SQNR of {nl} | PyTorch default | "
          f"PyTorch best SQNR of {ns} |")
    print("|---|---:|---:|---:|---:|")

    def fid(e):
        return f"{100 * e['top1_agreement_with_fp32']:.2f} / {e['output_sqnr_db']:.1f}"

    summary = []
    for name, r in report["models"].items():
        c = r.get("lwc", {})
        ok = {s: e for s, e in r["settings"].items() if "error" not in e}
        if not ok or not c.get("pytorch_default"):
            continue
        lw = c["calibrators"]
        lsq = max(lw, key=lambda k: lw[k]["output_sqnr_db"])      # ties: the earlier one
        psq = max(ok, key=lambda k: ok[k]["output_sqnr_db"])
        print(f"| {name} | {fid(lw[c['default']])} | {fid(lw[lsq])} {lsq} | "
              f"{fid(ok[c['pytorch_default']])} | {fid(ok[psq])} {SETTING_TEXT.get(psq, psq)} |")
        top_agree = max(e["top1_agreement_with_fp32"] for e in ok.values())
        summary.append(f"{name}: lwc default SQNR {lw[c['default']]['output_sqnr_db'] - ok[psq]['output_sqnr_db']:+.1f} dB "
                       f"against PyTorch's highest ({SETTING_TEXT.get(psq, psq)}), agreement "
                       f"{100 * (lw[c['default']]['top1_agreement_with_fp32'] - top_agree):+.2f} points "
                       f"against PyTorch's highest of any setting")
    print()
    for line in summary:
        print(line)


# ----------------------------------------------------------------------------- main

def quantize_model(name, model, settings, xcal, xte, yte, fp32_top1, fp32_logits, args):
    """Returns ({setting: JSON entry}, {setting: top-1 class per test image})."""
    results, predictions = {}, {}
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
            top1, top5, qlogits = evaluate(quantized, xte, yte)
            agree, sqnr = fidelity(fp32_logits, qlogits)
            predictions[setting] = top1_classes(qlogits)
            if args.save_predictions:
                np.save(os.path.join(args.save_predictions, f"{name}_{setting}.npy"),
                        predictions[setting])   # lowest index among tied maxima, as lwc
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
    return results, predictions


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
                         "DIR/<model>_<setting>.npy (int64; lowest index among tied maxima, -1 for "
                         "a NaN row), and with --lwc-compare lwc's as DIR/<model>_lwc_<calibrator>.npy")
    ap.add_argument("--lwc-compare", action="store_true",
                    help="also quantize every model with lwc (each of --lwc-calibrators, calibrated "
                         "on the same training images), take lwc's per-image top-1 from `lwc exec` and "
                         "print the paired table (only-lwc / only-PyTorch right, exact McNemar p) and "
                         "the fidelity table")
    ap.add_argument("--lwc", default=os.path.join(REPO_DIR, "build", "apps", "lwc", "lwc"),
                    help="lwc binary for --lwc-compare (default build/apps/lwc/lwc)")
    ap.add_argument("--lwc-calibrators", type=lambda t: t.split(","), default=list(LWC_CALIBRATORS),
                    help="comma list; the first is lwc's default in the table (default "
                         + ",".join(LWC_CALIBRATORS) + ")")
    ap.add_argument("--lwc-dir", metavar="DIR",
                    help="keep lwc's INT8 files, reports and outputs in DIR (default: a temporary "
                         "folder, removed at the end)")
    args = ap.parse_args()
    if args.save_predictions:
        os.makedirs(args.save_predictions, exist_ok=True)
    if args.lwc_compare:
        bad = [c for c in args.lwc_calibrators if c not in LWC_CALIBRATORS]
        if bad or not args.lwc_calibrators:
            ap.error(f"--lwc-calibrators: unknown {bad}; valid: {', '.join(LWC_CALIBRATORS)}")
        if not os.access(args.lwc, os.X_OK):
            ap.error(f"--lwc {args.lwc}: not an executable file")

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

    lwc_tmp = lwc_dir = xte_npy = None
    if args.lwc_compare:
        if args.lwc_dir:
            lwc_dir = args.lwc_dir
            os.makedirs(lwc_dir, exist_ok=True)
        else:
            lwc_tmp = tempfile.TemporaryDirectory(prefix="torch_ptq_lwc_")
            lwc_dir = lwc_tmp.name
        xte_npy = os.path.join(lwc_dir, "t10k_preprocessed.npy")
        np.save(xte_npy, xte.numpy())
        version = _run([args.lwc, "--version"]).strip()
        print(f"# lwc: {args.lwc} ({version}), calibrators {', '.join(args.lwc_calibrators)}",
              flush=True)

    report = {"command": command, "torch": torch.__version__, "backend": backend,
              "available_engines": engines, "calib_samples": int(xcal.shape[0]),
              "calib_source": "first training images (train-images-idx3-ubyte)",
              "calib_batch": args.calib_batch, "test_images": int(len(yte)),
              "seed": args.seed, "threads": args.threads,
              "settings": {s: text for s, (text, _) in settings.items()}, "models": {}}
    if args.lwc_compare:
        report["lwc"] = {"binary": args.lwc, "version": version,
                         "calibrators": args.lwc_calibrators,
                         "predictions": "lwc exec on train_fmnist.preprocess(test images); top-1 = "
                                        "lowest index among tied maxima"}
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
        fp32_top1, fp32_top5, fp32_logits = evaluate(model, xte, yte)
        expected = info["top1_correct"]
        print(f"{name:<10} {'fp32':<21} top1 {fp32_top1}/{len(yte)} "
              f"({pct(fp32_top1, len(yte)):.2f}%)  models.json {expected}"
              + (f"  renamed {len(renamed)} ONNX weights" if renamed else ""), flush=True)
        if abs(fp32_top1 - expected) > FP32_TOLERANCE:
            sys.exit(f"{name}: FP32 PyTorch model scores {fp32_top1} correct, models.json "
                     f"says {expected} (tolerance {FP32_TOLERANCE}); the weights did not "
                     f"load correctly, refusing to report INT8 numbers")

        results, predictions = quantize_model(name, model, settings, xcal, xte, yte, fp32_top1,
                                              fp32_logits, args)
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
        }
        if args.lwc_compare:
            lwc = lwc_side(name, os.path.join(args.testdata, info["file"]), xte_npy, yte, args,
                           lwc_dir)
            lwc_preds = {c: r.pop("predictions") for c, r in lwc.items()}
            if args.save_predictions:
                for c, pred in lwc_preds.items():
                    np.save(os.path.join(args.save_predictions, f"{name}_lwc_{c}.npy"), pred)
            report["models"][name]["lwc"] = compare_with_lwc(name, lwc, lwc_preds, results,
                                                             predictions, best, args, yte)
        report["models"][name]["seconds"] = round(time.time() - t_model, 1)

    report["total_seconds"] = round(time.time() - start, 1)
    if lwc_tmp is not None:
        lwc_tmp.cleanup()
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
    if args.lwc_compare:
        print_lwc_tables(report, backend, len(yte), args)
    print(f"wrote {args.out}; total {report['total_seconds']:.0f}s")


if __name__ == "__main__":
    main()
