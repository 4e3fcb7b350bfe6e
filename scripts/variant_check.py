#!/usr/bin/env python3
"""Valid variants of a real model, of the kinds other exporters and tools write, through lwc's
commands and ONNX Runtime: what ONNX Runtime runs, lwc must run too, with the same accuracy, and
every model lwc writes must run in ONNX Runtime with the accuracy lwc reports.

    scripts/variant_check.py MODEL.onnx [--lwc build/apps/lwc/lwc] [--data testdata/fmnist_sample]

Variants (each alone):
  output-no-shape  the graph output declares its type only (make_tensor_value_info(name, FLOAT, None))
  dynamic-hw       height and width symbolic as well as the batch (dynamic_axes on H and W)
  tf-names         input and output named as TensorFlow converters name them ('serving_default/x:0')
  external-data    weights in a separate file beside the model (save_as_external_data)
  opset-15, -17    converted with ONNX's version converter
  float16          every float constant and the input and output in float16
  init-inputs      every initializer also listed as a graph input (keep_initializers_as_inputs=True)
  dup-names        every node named 'node' (ONNX Runtime refuses this input; lwc's outputs must load)
  no-names         no node named
  constant-nodes   the weights in Constant nodes instead of initializers
  local-functions  every node of the first node's op type a call of a model-local function whose
                   body takes its attributes from the call (export_modules_as_functions)
  opset-11         the opset import set to 11 where every node means the same there (n/a where
                   ONNX's checker refuses it): per-tensor weight scales, DequantizeLinear without axis
  view-flatten     the Flatten as x.view(x.size(0), -1) exports (Shape, Gather, Unsqueeze, Concat,
                   Reshape); n/a for a model without Flatten
  mean-head        GlobalAveragePool + Flatten as x.mean([2, 3]) exports (ReduceMean, keepdims 0)
  squeeze-head     the Flatten after GlobalAveragePool as .squeeze(-1).squeeze(-1) (Squeeze);
                   both n/a for a model without GlobalAveragePool -> Flatten
  concat-conv      the widest Conv with an even channel count as two Convs of half the channels
                   and a Concat along the channels (n/a without such a Conv); its channel
                   pruning runs with --round-to 1 and must slice the Concat (or say why not)
  split-concat     the widest Conv with an even channel count followed by a Split into two halves
                   and a Concat of the halves (the same function; n/a without such a Conv); its
                   channel pruning runs with --round-to 1 and must slice the Split (or say why not)
  chunk-concat     the same with the Split written as torch 1.13 exports x.chunk(2, 1) with a
                   symbolic batch: two Slices whose bounds come from Shape -> Gather -> Div
  opset-20         opset 20 and IR 10, newer than lwc's ONNX 1.12 knows: reductions take their
                   axes as an input (opset 18) and the GELU written out with Erf is one Gelu node
                   (opset 20); lwc reads it as opset 17, IR 8

For each variant: ONNX Runtime's top-1 on the data, then `lwc eval` (must equal it), then
`lwc fuse`, `lwc quantize` (static, 64 calibration samples), `lwc prune --sparsity 0.5` and
`lwc prune --channels 0.3`: each must write a file whose ONNX Runtime top-1 equals lwc's own
`lwc eval` of it (within one image for the INT8 files: the runtimes may round one requantization
differently; on an x86 CPU without VNNI quantized with --reduce-range, as ONNX Runtime's int8
kernels saturate with 8-bit weights there), and `prune --channels 0.3` must leave as many MACs as on the model itself (but on
dynamic-hw, whose MACs are unknown, concat-conv, whose halves are groups of their own, and
split-concat and chunk-concat, whose halves keep channels each on its own).
float16 models cannot be quantized or pruned: those commands must stop with exit code 1 and say
the weights are float16. Exit code 1 when any check fails; one line per check.
Needs Debian's python3-onnx and numpy, node and scripts/ort (npm install there).
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper, version_converter, TensorProto

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from ort_crosscheck import host_x86_without_vnni  # noqa: E402


def rename_io(m):
    g = m.graph
    names = {g.input[0].name: "serving_default/input:0", g.output[0].name: "StatefulPartitionedCall/model/dense/BiasAdd:0"}
    for n in g.node:
        n.input[:] = [names.get(x, x) for x in n.input]
        n.output[:] = [names.get(x, x) for x in n.output]
    g.input[0].name = names[g.input[0].name]
    g.output[0].name = names[g.output[0].name]
    return m


def dynamic_hw(m):
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for i, sym in ((2, "H"), (3, "W")):
        dims[i].Clear()
        dims[i].dim_param = sym
    return m


def to_float16(m):
    g = m.graph
    for t in g.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Constant" and a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16)))
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == TensorProto.FLOAT:
            v.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.value_info[:]
    return m


def initializers_as_inputs(m):
    g = m.graph
    for t in g.initializer:
        g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return m


def duplicate_node_names(m):
    for n in m.graph.node:
        n.name = "node"
    return m


def no_node_names(m):
    for n in m.graph.node:
        n.name = ""
    return m


def constant_nodes(m):
    g = m.graph
    nodes = [onnx.helper.make_node("Constant", [], [t.name], name=f"const_{i}", value=t) for i, t in enumerate(g.initializer)]
    nodes += list(g.node)
    del g.initializer[:]
    del g.node[:]
    g.node.extend(nodes)
    return m


def local_functions(m):
    """Every node of the first node's op type becomes a call of one model-local function whose
    body reads the node's attributes from the call (ref_attr_name), as exporters write modules."""
    h, g = onnx.helper, m.graph
    op = g.node[0].op_type
    arity = max(len(n.input) for n in g.node if n.op_type == op)
    attrs = sorted({a.name for n in g.node if n.op_type == op for a in n.attribute})
    formal = [f"x{i}" for i in range(arity)]
    body = h.make_node(op, formal, ["y"])
    for a in attrs:
        ref = onnx.AttributeProto()
        ref.name, ref.ref_attr_name = a, a
        src = next(x for n in g.node if n.op_type == op for x in n.attribute if x.name == a)
        ref.type = src.type
        body.attribute.append(ref)
    version = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    m.functions.append(h.make_function("lwc.test", "Block", formal, ["y"], [body], [h.make_opsetid("", version)], attrs))
    for n in g.node:
        if n.op_type == op:
            n.op_type, n.domain = "Block", "lwc.test"
    m.opset_import.append(h.make_opsetid("lwc.test", 1))
    m.ir_version = max(m.ir_version, 8)
    return m


def view_flatten(m):
    """The Flatten as torch.onnx.export writes x.view(x.size(0), -1): Shape -> Gather(0) ->
    Unsqueeze -> Concat(., [-1]) -> Reshape."""
    h, g = onnx.helper, m.graph
    at = next((i for i, n in enumerate(g.node) if n.op_type == "Flatten"), None)
    if at is None:
        raise ValueError("the model has no Flatten")
    f = g.node[at]
    x, y = f.input[0], f.output[0]
    g.initializer.extend([numpy_helper.from_array(np.array(0, np.int64), "view_i0"),
                          numpy_helper.from_array(np.array([0], np.int64), "view_axes"),
                          numpy_helper.from_array(np.array([-1], np.int64), "view_m1")])
    chain = [h.make_node("Shape", [x], ["view_s"], name="/view/Shape"),
             h.make_node("Gather", ["view_s", "view_i0"], ["view_b"], name="/view/Gather", axis=0),
             h.make_node("Unsqueeze", ["view_b", "view_axes"], ["view_bu"], name="/view/Unsqueeze"),
             h.make_node("Concat", ["view_bu", "view_m1"], ["view_t"], name="/view/Concat", axis=0),
             h.make_node("Reshape", [x, "view_t"], [y], name="/view/Reshape")]
    nodes = list(g.node[:at]) + chain + list(g.node[at + 1:])
    del g.node[:]
    g.node.extend(nodes)
    return m


def pooled_head(kind):
    """GlobalAveragePool -> Flatten as other model code writes it: x.mean([2, 3]) (ReduceMean,
    keepdims 0) or F.adaptive_avg_pool2d(x, 1).squeeze(-1).squeeze(-1) (GlobalAveragePool, Squeeze
    with axes [-1, -2])."""
    def f(m):
        h, g = onnx.helper, m.graph
        at = next((i for i, n in enumerate(g.node) if n.op_type == "Flatten" and i > 0 and
                   g.node[i - 1].op_type == "GlobalAveragePool" and g.node[i - 1].output[0] == n.input[0]), None)
        if at is None:
            raise ValueError("the model has no GlobalAveragePool -> Flatten")
        pool, flat = g.node[at - 1], g.node[at]
        if kind == "mean":
            new = [h.make_node("ReduceMean", [pool.input[0]], [flat.output[0]], name="/mean/ReduceMean", axes=[2, 3], keepdims=0)]
        else:
            opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
            if opset >= 13:
                g.initializer.append(numpy_helper.from_array(np.array([-1, -2], np.int64), "squeeze_axes"))
                sq = h.make_node("Squeeze", [pool.output[0], "squeeze_axes"], [flat.output[0]], name="/squeeze/Squeeze")
            else:
                sq = h.make_node("Squeeze", [pool.output[0]], [flat.output[0]], name="/squeeze/Squeeze", axes=[-1, -2])
            new = [pool, sq]
        nodes = list(g.node[:at - 1]) + new + list(g.node[at + 1:])
        del g.node[:]
        g.node.extend(nodes)
        return m
    return f


def widest_even_conv(g):
    """Index of the widest Conv with an even number of output channels (the first of equals), so
    that its halves lose channels at 0.3."""
    inits = {t.name: t for t in g.initializer}
    convs = [(inits[n.input[1]].dims[0], -i) for i, n in enumerate(g.node) if n.op_type == "Conv" and
             n.input[1] in inits and inits[n.input[1]].dims[0] % 2 == 0]
    if not convs:
        raise ValueError("the model has no Conv with an even number of channels")
    return -max(convs)[1]


def concat_conv(m):
    """The widest Conv with an even number of output channels split in two halves joined by a Concat
    along the channels (the same function), as Inception/SqueezeNet-style code computes branches."""
    h, g = onnx.helper, m.graph
    inits = {t.name: t for t in g.initializer}
    at = widest_even_conv(g)
    conv = g.node[at]
    w = numpy_helper.to_array(inits[conv.input[1]])
    b = numpy_helper.to_array(inits[conv.input[2]]) if len(conv.input) > 2 and conv.input[2] else None
    half, parts = w.shape[0] // 2, []
    for k in range(2):
        names = [conv.input[0], f"concat_w{k}"]
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[k * half:(k + 1) * half]), f"concat_w{k}"))
        if b is not None:
            g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(b[k * half:(k + 1) * half]), f"concat_b{k}"))
            names.append(f"concat_b{k}")
        part = h.make_node("Conv", names, [f"concat_part{k}"], name=f"{conv.name}_part{k}")
        part.attribute.extend(conv.attribute)
        parts.append(part)
    cat = h.make_node("Concat", ["concat_part0", "concat_part1"], [conv.output[0]], name=f"{conv.name}_concat", axis=1)
    nodes = list(g.node[:at]) + parts + [cat] + list(g.node[at + 1:])
    del g.node[:]
    g.node.extend(nodes)
    return m


def after_widest_conv(m, nodes_for):
    """The widest Conv with an even number of output channels made to write `cut_in`, followed
    by the nodes `nodes_for(conv)` returns, the last of which writes the Conv's old output."""
    g = m.graph
    at = widest_even_conv(g)
    conv = g.node[at]
    y = conv.output[0]
    conv.output[0] = "cut_in"
    added = nodes_for(conv)
    added[-1].output[0] = y
    nodes = list(g.node[:at + 1]) + added + list(g.node[at + 1:])
    del g.node[:]
    g.node.extend(nodes)
    return m


def split_concat(m):
    """The widest Conv with an even number of output channels followed by a Split into two equal
    halves (x.chunk(2, 1): no sizes stated) and a Concat of them (the same function), the way
    YOLOv8's C2f and ShuffleNetV2 split a layer's channels."""
    h = onnx.helper
    return after_widest_conv(m, lambda conv: [
        h.make_node("Split", ["cut_in"], ["cut_part0", "cut_part1"], name=f"{conv.name}_split", axis=1),
        h.make_node("Concat", ["cut_part0", "cut_part1"], ["cut_out"], name=f"{conv.name}_concat", axis=1)])


def chunk_concat(m):
    """split_concat with the halves cut as torch 1.13 exports x.chunk(2, 1) with a symbolic batch:
    two Slices whose bounds are computed from the Shape of the Conv's output."""
    h, g = onnx.helper, m.graph
    for name, v in (("chunk_axis", [1]), ("chunk_zero", [0]), ("chunk_two", [2])):
        g.initializer.append(numpy_helper.from_array(np.array(v, np.int64), name))
    return after_widest_conv(m, lambda conv: [
        h.make_node("Shape", ["cut_in"], ["chunk_shape"]),
        h.make_node("Gather", ["chunk_shape", "chunk_axis"], ["chunk_c"], axis=0),
        h.make_node("Div", ["chunk_c", "chunk_two"], ["chunk_half"]),
        h.make_node("Slice", ["cut_in", "chunk_zero", "chunk_half", "chunk_axis"], ["cut_part0"], name=f"{conv.name}_chunk0"),
        h.make_node("Slice", ["cut_in", "chunk_half", "chunk_c", "chunk_axis"], ["cut_part1"], name=f"{conv.name}_chunk1"),
        h.make_node("Concat", ["cut_part0", "cut_part1"], ["cut_out"], name=f"{conv.name}_concat", axis=1)])


def relabel_opset(version):
    """The default-domain opset import set to `version` without converting any node: valid where
    every node means the same at that opset (ONNX's checker must accept it), as the models of
    older exporters are (torch.onnx.export(..., opset_version=11))."""
    def f(m):
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = version
        onnx.checker.check_model(m, full_check=True)
        return m
    return f


REDUCE_AXES_INPUT = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                     "ReduceMin", "ReduceProd", "ReduceSumSquare")


def erf_gelu(g, erf):
    """The five nodes of a GELU torch 1.13 writes out around `erf` (Div by sqrt 2, Erf, Add 1,
    Mul by x, Mul by 0.5), as (x, nodes, output), or None."""
    producer = {o: n for n in g.node for o in n.output}
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    div = producer.get(erf.input[0])
    def only_reader(v, op):
        r = readers.get(v, [])
        return r[0] if len(r) == 1 and r[0].op_type == op else None
    add = only_reader(erf.output[0], "Add")
    mul = add and only_reader(add.output[0], "Mul")
    half = mul and only_reader(mul.output[0], "Mul")
    if not (div is not None and div.op_type == "Div" and add and mul and half):
        return None
    x = div.input[0]
    if x not in mul.input:
        return None
    return x, [div, erf, add, mul, half], half.output[0]


def opset_20(m):
    """The model as newer exporters write it: opset 20 and IR 10, the reductions with their axes as
    a constant input (opset 18), and each GELU written out with Erf one Gelu node (opset 20)."""
    g = m.graph
    for n in g.node:
        if n.op_type in REDUCE_AXES_INPUT:
            axes = next((a for a in n.attribute if a.name == "axes"), None)
            if axes is not None:
                name = (n.name or n.output[0]) + "_axes"
                g.initializer.append(numpy_helper.from_array(np.array(list(axes.ints), dtype=np.int64), name))
                n.attribute.remove(axes)
                n.input.append(name)
    for erf in [n for n in g.node if n.op_type == "Erf"]:
        found = erf_gelu(g, erf)
        if found is None:
            continue
        x, nodes, out = found
        at = list(g.node).index(nodes[0])
        for n in nodes:
            g.node.remove(n)
        g.node.insert(at, onnx.helper.make_node("Gelu", [x], [out], name=(erf.name or out) + "_gelu"))
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 20
    m.ir_version = 10
    return m


def output_no_shape(m):
    m.graph.output[0].type.tensor_type.ClearField("shape")
    return m


VARIANTS = {
    "output-no-shape": output_no_shape,
    "dynamic-hw": dynamic_hw,
    "tf-names": rename_io,
    "external-data": lambda m: m,  # saved differently below
    "opset-15": lambda m: version_converter.convert_version(m, 15),
    "opset-17": lambda m: version_converter.convert_version(m, 17),
    "float16": to_float16,
    "init-inputs": initializers_as_inputs,
    "dup-names": duplicate_node_names,
    "no-names": no_node_names,
    "constant-nodes": constant_nodes,
    "local-functions": local_functions,
    "view-flatten": view_flatten,
    "opset-11": relabel_opset(11),
    "mean-head": pooled_head("mean"),
    "squeeze-head": pooled_head("squeeze"),
    "concat-conv": concat_conv,
    "split-concat": split_concat,
    "chunk-concat": chunk_concat,
    "opset-20": opset_20,
}
# prune --channels may leave other MACs: unknown (dynamic-hw), or other groups to rank and align
# (concat-conv) or segments aligned each on its own (split-concat).
SAME_MACS_EXEMPT = ("dynamic-hw", "concat-conv", "split-concat", "chunk-concat")
# Variants whose channel pruning runs unaligned (--round-to 1) and must slice the node the variant
# added, or say why not: the report's stat and the note that names the reason.
SLICED = {"concat-conv": ("concats_sliced", "Concat", "whose channels are left alone"),
          "split-concat": ("splits_sliced", "Split", "of Split"),
          "chunk-concat": ("splits_sliced", "Split", "of Split")}
# ONNX Runtime refuses these as they are; its top-1 on the original model is the reference.
ORT_REFUSES_INPUT = {"dup-names"}


class Checker:
    def __init__(self, args):
        self.args = args
        self.failures = 0
        self.expected_macs = None
        self.ort_pre = os.path.join(args.data, "preprocess.json")  # the ORT tool reads lwc's file

    def lwc(self, *argv):
        return subprocess.run([self.args.lwc, *argv], capture_output=True, text=True, timeout=600)

    def lwc_top1(self, model):
        r = self.lwc("eval", model, "--data", self.args.data, "--json")
        if r.returncode != 0:
            raise RuntimeError("lwc eval: " + r.stderr.strip())
        return json.loads(r.stdout)["top1_correct"]

    def ort_top1(self, model):
        r = subprocess.run(["node", os.path.join(ROOT, "scripts/ort/ort_tool.js"), "eval", model,
                            "--npy", os.path.join(self.args.data, "images.npy"),
                            "--npy-labels", os.path.join(self.args.data, "labels.npy"),
                            "--preprocess", self.ort_pre, "--json"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError("ONNX Runtime: " + (r.stderr.strip() or r.stdout.strip()))
        return json.loads(r.stdout)["correct"]

    def report(self, ok, what):
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        self.failures += 0 if ok else 1

    def check_variant(self, name, path, tmp, ort_path=None):
        try:
            ort = self.ort_top1(ort_path or path)
            mine = self.lwc_top1(path)
        except RuntimeError as e:
            return self.report(False, f"{name}: {e}")
        self.report(ort == mine, f"{name}: lwc eval {mine} correct, ONNX Runtime {ort}")
        half = name.endswith("float16")
        calib = ["--calib", self.args.data, "--calib-samples", "64", "--layer-samples", "0"]
        # The latency the reports measure (about 3 s a command) is kept where the variant is about
        # input shapes, which is what random timing inputs are made from.
        bench = [] if name.endswith("dynamic-hw") else ["--bench-batch", "0"]
        # Unaligned, so that the halves lose channels; the report says whether the node was sliced.
        report = os.path.join(tmp, "report.json")
        sliced_check = next((v for k, v in SLICED.items() if name.endswith(k)), None)
        concat = ["--round-to", "1", "--report", report] if sliced_check else []
        reduce_range = ["--reduce-range"] if host_x86_without_vnni() else []
        commands = [("fuse", ["fuse"], False),
                    ("quantize", ["quantize", *calib, *bench, *reduce_range], half),
                    ("prune --sparsity 0.5", ["prune", "--sparsity", "0.5"], half),
                    ("prune --channels 0.3", ["prune", "--channels", "0.3", *bench, *concat], half)]
        for label, argv, refused in commands:
            out = os.path.join(tmp, "out.onnx")
            if os.path.exists(out):
                os.remove(out)
            r = self.lwc(*argv, path, "-o", out)
            if refused:
                self.report(r.returncode == 1 and "weights are float16" in r.stderr and not os.path.exists(out),
                            f"{name}: lwc {label}: exit code {r.returncode}, {r.stderr.strip()[-120:]}")
                continue
            if r.returncode != 0 or not os.path.exists(out):
                self.report(False, f"{name}: lwc {label}: exit code {r.returncode}: {r.stderr.strip()[-300:]}")
                continue
            try:
                mine, ort = self.lwc_top1(out), self.ort_top1(out)
            except RuntimeError as e:
                self.report(False, f"{name}: lwc {label}: output: {e}")
                continue
            slack = 1 if label == "quantize" else 0
            self.report(abs(mine - ort) <= slack, f"{name}: lwc {label}: lwc eval {mine} correct, ONNX Runtime {ort}")
            if concat and label == "prune --channels 0.3":
                # The halves must lose channels through the Concat or Split, or, where the layer
                # cannot lose channels in the model itself (tinyformer: a Reshape reads it), a note
                # must say why.
                stat, op, reason = sliced_check
                with open(report) as f:
                    stage = json.load(f)["stages"][-1]
                sliced = stage["stats"].get(stat, 0)
                if sliced >= 1:
                    self.report(True, f"{name}: lwc {label}: {sliced} {op}s sliced")
                else:
                    why = [n for n in stage["notes"] if reason in n and "left alone" in n]
                    self.report(bool(why), f"{name}: lwc {label}: no {op} sliced ({why[0] if why else 'no note says why'})")
            if label == "prune --channels 0.3" and self.expected_macs is not None and not name.endswith(SAME_MACS_EXEMPT):
                # The same network written another way must lose the same channels.
                macs = self.macs(out)
                self.report(macs == self.expected_macs,
                            f"{name}: lwc {label}: {macs} MACs left, {self.expected_macs} from the original model")

    def macs(self, model):
        r = self.lwc("info", model, "--json")
        if r.returncode != 0:
            raise RuntimeError("lwc info: " + r.stderr.strip())
        return json.loads(r.stdout)["macs"]

    def set_reference(self, model, tmp):
        """MACs left by `lwc prune --channels 0.3` on the model as committed: every variant but
        dynamic-hw (MACs unknown) must leave exactly as many."""
        out = os.path.join(tmp, "reference.onnx")
        r = self.lwc("prune", "--channels", "0.3", "--bench-batch", "0", model, "-o", out)
        self.expected_macs = self.macs(out) if r.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--data", default=os.path.join(ROOT, "testdata/fmnist_sample"))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    args = ap.parse_args()
    base = onnx.load(args.model)
    c = Checker(args)
    stem = os.path.splitext(os.path.basename(args.model))[0]
    with tempfile.TemporaryDirectory() as tmp:
        c.set_reference(args.model, tmp)
    for name in args.variants.split(","):
        if name not in VARIANTS:
            sys.exit(f"variant_check: unknown variant '{name}'")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                m = VARIANTS[name](copy.deepcopy(base))
            except Exception as e:  # the converter has no adapter for some op at that opset, no Flatten, ...
                print(f"n/a   {stem} {name}: {str(e).splitlines()[0][:120]}")
                continue
            path = os.path.join(tmp, f"{stem}.{name}.onnx")
            if name == "external-data":
                onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True,
                          location=f"{stem}.weights", size_threshold=1024)
            else:
                onnx.save(m, path)
            c.check_variant(f"{stem} {name}", path, tmp, args.model if name in ORT_REFUSES_INPUT else None)
    print(f"variant_check: {c.failures} failed")
    sys.exit(1 if c.failures else 0)


if __name__ == "__main__":
    main()
