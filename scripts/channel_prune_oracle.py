#!/usr/bin/env python3
"""Channel-prunes each model with a few fixed settings and checks every result against a semantic
oracle (CTest channel_prune_random, on scripts/gen_prune_graphs.py's random graphs):

    scripts/channel_prune_oracle.py [--lwc build/apps/lwc/lwc] MODEL.onnx ...

Per model, F = `lwc fuse MODEL` (the cleanup `lwc prune` runs around its pruning), then for each
setting in SETTINGS `lwc -q prune MODEL ARGS -o P --report R` (no recovery, so the kept weights are
the original's) and these checks:
  - exit status: 0 with P written and nothing on stderr, or 1 (a clean refusal, e.g. a MACs target
    out of reach) with exactly one stderr line, starting "lwc: error:", and no P;
  - P passes onnx.checker's full check and strict shape inference (with type checks);
  - the MACs and parameters in R's final metrics equal `lwc info --json P`; with
    --macs-reduction T, MACs drop by at least T from the cleaned model's (R's stage before
    prune_channels);
  - the oracle: each Conv/ConvTranspose/Gemm/MatMul weight of P is a sub-block of the weight of
    F's node of the same name (rows kept in order; its bias the kept entries of F's), which gives
    the input rows that layer lost; F with those rows zeroed (Z) must compute what P does. lwc runs
    P and Z on the same seeded random inputs, batch 2 (max|P - Z| <= 1e-4 * max|Z| per output), and
    ONNX Runtime runs P too (agreement with lwc as in scripts/ort_crosscheck.py, at ONNX Runtime's
    full optimization level: scripts/gen_prune_graphs.py writes no zero Pad before a MaxPool, where
    ONNX Runtime's PadFusion is wrong). Where Z's outputs hardly depend on the input (a Relu of a
    few negative values, say), agreement would prove nothing: the values go unchecked and the
    model's line says "constant" for that setting.
Nodes are matched by name: lwc keeps node names, and the generator names every node.

One line per model (channels removed per setting), then per setting how many models were compared
with the oracle, refused, or constant; exit code 1 when any model fails or a setting was compared on
fewer than --min-compared of the models.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ort_crosscheck import ROOT, check_informative, compare_outputs, lwc_exec, ort_run, run_each  # noqa: E402

# (label, lwc prune arguments); CALIB stands for a file of 32 seeded random input samples.
SETTINGS = [
    ("channels", ["--channels", "0.3"]),
    ("channels-l2", ["--channels", "0.6", "--round-to", "1", "--min-channels", "1", "--importance", "l2"]),
    ("macs", ["--macs-reduction", "0.3", "--round-to", "1", "--min-channels", "1"]),
    ("macs-calib", ["--macs-reduction", "0.2", "--calib", "CALIB"]),
]
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RTOL = 1e-4  # of each output's largest magnitude, for P against Z and for ONNX Runtime against lwc


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def initializers(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def channel_axes(node, w):
    """(output axis, input axis) of a weight."""
    if node.op_type == "Conv":
        return 0, 1
    if node.op_type == "ConvTranspose":
        return 1, 0
    if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
        return 0, 1
    return 1, 0  # Gemm, MatMul: [K, N]


def as_out_in_rest(w, out_axis, in_axis):
    """The weight as [outputs, inputs, everything else]."""
    w = np.moveaxis(w, [out_axis, in_axis], [0, 1])
    return w.reshape(w.shape[0], w.shape[1], -1)


def kept_rows(full, pruned):
    """(kept outputs, kept inputs) with full[outputs][:, inputs] == pruned, both increasing (arrays
    [O, I, rest]); raises ValueError when pruned is no such sub-block."""
    where = {}
    for o in range(full.shape[0]):
        for i in range(full.shape[1]):
            where.setdefault(full[o, i].tobytes(), []).append((o, i))
    outs = [set(range(full.shape[0])) for _ in range(pruned.shape[0])]
    ins = [set(range(full.shape[1])) for _ in range(pruned.shape[1])]
    for r in range(pruned.shape[0]):
        for c in range(pruned.shape[1]):
            places = where.get(pruned[r, c].tobytes(), [])
            outs[r] &= {o for o, _ in places}
            ins[c] &= {i for _, i in places}
    if not all(outs) or not all(ins):
        raise ValueError("is not a sub-block of the original weight")
    kept_out, kept_in = [min(s) for s in outs], [min(s) for s in ins]  # equal rows: take the first
    if sorted(set(kept_out)) != kept_out or sorted(set(kept_in)) != kept_in:
        raise ValueError("keeps the original's rows out of order")
    if not np.array_equal(full[np.ix_(kept_out, kept_in)], pruned):
        raise ValueError("is not a sub-block of the original weight")
    return kept_out, kept_in


def zeroed_original(fused, pruned):
    """The oracle Z: FUSED with each weight's input rows that PRUNED dropped set to zero. Raises
    ValueError when a pruned weight or bias is not a selection of the original's."""
    full, cut = initializers(fused), initializers(pruned)
    oracle = onnx.ModelProto()
    oracle.CopyFrom(fused)
    nodes = {n.name: n for n in oracle.graph.node}
    for n in pruned.graph.node:
        if n.op_type not in WEIGHT_OPS or len(n.input) < 2 or n.input[1] not in cut:
            continue
        original = nodes.get(n.name)
        if original is None or original.input[1] not in full:
            raise ValueError(f"{n.op_type} {n.name!r} has no constant-weight node of its name in the fused original")
        w_full, w_cut = full[original.input[1]], cut[n.input[1]]
        out_axis, in_axis = channel_axes(original, w_full)
        if w_full.ndim != w_cut.ndim:
            raise ValueError(f"{n.name!r}: weight rank {w_full.ndim} -> {w_cut.ndim}")
        try:
            kept_out, kept_in = kept_rows(as_out_in_rest(w_full, out_axis, in_axis), as_out_in_rest(w_cut, out_axis, in_axis))
        except ValueError as e:
            raise ValueError(f"{n.name!r}: pruned weight {list(w_cut.shape)} {e} {list(w_full.shape)}") from None
        if len(n.input) > 2 and n.input[2] in cut and original.input[2] in full:
            b_full, b_cut = full[original.input[2]].reshape(-1), cut[n.input[2]].reshape(-1)
            if b_full.size == w_full.shape[out_axis]:
                b_full = b_full[kept_out]
            if not np.array_equal(b_full, b_cut):
                raise ValueError(f"{n.name!r}: bias is not the original's kept entries")
        dropped = sorted(set(range(w_full.shape[in_axis])) - set(kept_in))
        if dropped:
            w = w_full.copy()
            w[(slice(None),) * in_axis + (dropped,)] = 0
            name = f"{original.input[1]}__zeroed_for_{n.name}"  # per node: a shared weight may lose other rows
            oracle.graph.initializer.append(numpy_helper.from_array(w, name))
            original.input[1] = name
    return oracle


def check_exit(rc, stderr, output):
    """True when P was written, False on a clean refusal; raises otherwise."""
    lines = stderr.strip().splitlines()
    if rc == 0:
        if lines:
            raise RuntimeError(f"exit 0 with stderr under -q: {lines[0]}")
        if not os.path.exists(output):
            raise RuntimeError("exit 0 and no output file")
        return True
    if rc == 1 and len(lines) == 1 and lines[0].startswith("lwc: error:") and not os.path.exists(output):
        return False
    raise RuntimeError(f"exit {rc}{' and an output file' if os.path.exists(output) else ''}, stderr: {' | '.join(lines)[:400]}")


def check_onnx(path):
    model = onnx.load(path)
    try:
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:
        raise RuntimeError(f"onnx check: {type(e).__name__}: {str(e).strip()[:300]}") from None
    return model


def check_counts(lwc, path, report, args):
    rc, out, err = run([lwc, "info", path, "--json"])
    if rc != 0:
        raise RuntimeError(f"lwc info: {err.strip()}")
    info, final = json.loads(out), report["final"]
    for key in ("macs", "params"):
        if final[key] != info[key]:
            raise RuntimeError(f"report {key} {final[key]} but lwc info of the file {info[key]}")
    if "--macs-reduction" in args:
        target = float(args[args.index("--macs-reduction") + 1])
        stages = report["stages"]
        before = next(stages[i - 1] for i, s in enumerate(stages) if s["pass"] == "prune_channels")["metrics"]["macs"]
        if 1 - final["macs"] / before < target - 1e-9:  # 5280 -> 3696 is -30 %, though 3696 > 0.7 * 5280
            raise RuntimeError(f"MACs {before} -> {final['macs']}: less than the {target:g} reduction asked for")


def check_setting(lwc, model, fused, args, d, label):
    """Prunes MODEL with ARGS and checks the result. Returns what happened, for the model's line:
    the number of channels removed, "refused", or "constant" where the oracle's outputs hardly depend
    on the input, so that agreement would prove nothing and the values go unchecked."""
    pruned, report = os.path.join(d, f"{label}.onnx"), os.path.join(d, f"{label}.json")
    rc, _, err = run([lwc, "-q", "prune", model] + args
                     + ["-o", pruned, "--report", report, "--bench-batch", "0", "--threads", "1"])
    if not check_exit(rc, err, pruned):
        return "refused"
    written = check_onnx(pruned)
    report = json.load(open(report))
    check_counts(lwc, pruned, report, args)
    oracle = os.path.join(d, f"{label}_oracle.onnx")
    onnx.save(zeroed_original(fused, written), oracle)
    ort_dir, lwc_dir, oracle_dir = (os.path.join(d, f"{label}_{s}") for s in ("ort", "lwc", "oracle"))
    ort_run(pruned, ort_dir, 1, batch=2)
    lwc_exec(lwc, pruned, lwc_dir, 1, ort_dir)
    lwc_exec(lwc, oracle, oracle_dir, 1, ort_dir)
    try:
        check_informative(oracle_dir, [f for f in os.listdir(oracle_dir) if f.endswith(".npy")])
    except RuntimeError:
        return "constant"
    try:
        compare_outputs(oracle_dir, lwc_dir, RTOL, 0.0)
    except RuntimeError as e:
        raise RuntimeError(f"pruned model differs from the zeroed original: {e}") from None
    try:
        compare_outputs(ort_dir, lwc_dir, RTOL, 0.0)
    except RuntimeError as e:
        raise RuntimeError(f"ONNX Runtime and lwc disagree on the pruned model: {e}") from None
    stage = next(s for s in report["stages"] if s["pass"] == "prune_channels")
    return str(stage["stats"].get("channels_removed", 0))


def calibration_file(model, path, samples=32):
    """Seeded random samples for the model's one input, as lwc --calib reads a .npy."""
    dims = [d.dim_value for d in onnx.load(model).graph.input[0].type.tensor_type.shape.dim][1:]
    np.save(path, np.random.default_rng(0).standard_normal([samples] + dims).astype(np.float32))
    return path


# Per setting, how often each outcome came: "compared" (values checked against the oracle),
# "refused", "constant". A setting never compared would pass without proving anything.
TALLY = {label: {"compared": 0, "refused": 0, "constant": 0} for label, _ in SETTINGS}


def check_model(lwc, model):
    results = []
    with tempfile.TemporaryDirectory() as d:
        fused = os.path.join(d, "fused.onnx")
        rc, _, err = run([lwc, "-q", "fuse", model, "-o", fused, "--threads", "1"])
        if rc != 0:
            raise RuntimeError(f"lwc fuse: {err.strip()}")
        fused = onnx.load(fused)
        calib = calibration_file(model, os.path.join(d, "calib.npy"))
        for label, args in SETTINGS:
            args = [calib if a == "CALIB" else a for a in args]
            try:
                outcome = check_setting(lwc, model, fused, args, d, label)
                TALLY[label][outcome if outcome in ("refused", "constant") else "compared"] += 1
                results.append(f"{label} {outcome}")
            except Exception as e:
                raise RuntimeError(f"{label} ({' '.join(a for a in args if a != calib)}): {e}") from None
    return "  channels removed: " + ", ".join(results)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--min-compared", type=float, default=0.25,
                    help="each setting must be checked against the oracle (not refused, not constant) on at least "
                         "this fraction of the models (default 0.25), or the run fails: it would prove little")
    args = ap.parse_args()
    rc = run_each(args.models, lambda m: check_model(args.lwc, m))
    for label, t in TALLY.items():
        need = max(1, int(np.ceil(args.min_compared * len(args.models))))
        ok = t["compared"] >= need
        print(f"{label}: compared {t['compared']}, refused {t['refused']}, constant {t['constant']}"
              + ("" if ok else f"  <- fewer than {need} compared"))
        rc = rc if ok else 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
