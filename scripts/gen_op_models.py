#!/usr/bin/python3
"""Writes seeded models of the ops whose cases ONNX's backend tests leave thin, for
scripts/ort_crosscheck.py to run in ONNX Runtime and lwc.

RNN / GRU / LSTM models that cover what ONNX's backend tests leave out (reverse and
bidirectional directions, sequence_lens with the reverse direction and a zero length,
peepholes, input_forget, GRU with and without linear_before_reset, activations with alpha and
beta, initial states, opset 7), plus PyTorch exports of nn.LSTM / nn.GRU / nn.RNN stacks and
of a wider bidirectional LSTM and forward GRU (hidden 96), for
scripts/ort_crosscheck.py to run in ONNX Runtime and lwc. Layout 1 and float64, which ONNX
Runtime 1.30 refuses for these ops, are left to the unit tests.

Einsum: attention's product, ellipses that broadcast, the implicit form, diagonals, three
operands, a full sum, upper-case labels, a size-1 label.

GridSample: every mode, padding mode and align_corners on random grids reaching past [-1, 1].

MaxPool -> MaxUnpool (with the pooled tensor's shape as output_shape, and without); Det.

RoiAlign: avg and max, both coordinate modes, sampling_ratio 0 and 2, spatial_scale, opset 10;
regions partly outside the image.

MeanVarianceNormalization with its default axes, one axis, a negative axis.

DFT (real and complex, inverse, onesided, dft_length padding and truncating, a negative axis),
STFT (real with a Hann window, complex two-sided), the Hann, Hamming and Blackman windows periodic
and symmetric, MelWeightMatrix (an odd dft_length), and a log-mel front-end (STFT, power,
MelWeightMatrix, MatMul, Log).

If with branches that read outer values (both branches), Loop with a trip count, carried values, a
scan output and an outer read, Loop of no trips (its scan output's slice shape inferred), Loop
ended by its body's condition with an If in its body, and a
Scan with two states, two scan inputs (another axis, backwards) and two outputs (another axis,
backwards).

Unique on values with repeats: flattened, along an axis, sorted and in first-occurrence order.

NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss: each reduction, class weights, ignore_index
(negative, a class, absent), scores of rank 2 to 4, the log_prob output.

NonMaxSuppression on random boxes (ort_crosscheck's random inputs: overlapping, some flipped): both box
formats, with and without score_threshold, iou_threshold 0 and 1, max_output_boxes_per_class 0.

    /usr/bin/python3 scripts/gen_op_models.py --out DIR [--seed 1] [--no-torch] [--bench]
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def save(graph, name, out_dir, opset, empty_output=False):
    """`empty_output`: every output is empty by design (scripts/ort_crosscheck.py then compares
    their shapes instead of refusing the run)."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="gen_op_models")
    model.ir_version = 8
    if empty_output:
        helper.set_model_props(model, {"ort_crosscheck.empty_output": "expected"})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, os.path.join(out_dir, name + ".onnx"))


def rnn_model(name, op, out_dir, rng, seq=5, batch=3, inp=4, hid=6, direction="forward", layout=0,
              bias=True, lens=None, init_h=False, init_c=False, peep=False, attrs=None, dtype=np.float32,
              opset=14, outputs=("Y", "Y_h", "Y_c")):
    dirs = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    x_shape = [seq, batch, inp] if layout == 0 else [batch, seq, inp]
    state = [dirs, batch, hid] if layout == 0 else [batch, dirs, hid]
    inits = [numpy_helper.from_array((rng.standard_normal((dirs, g * hid, inp)) * 0.5).astype(dtype), "W"),
             numpy_helper.from_array((rng.standard_normal((dirs, g * hid, hid)) * 0.5).astype(dtype), "R")]
    ins = ["X", "W", "R"]
    def opt(cond, tensor_name, array):
        if cond:
            inits.append(numpy_helper.from_array(array, tensor_name))
            ins.append(tensor_name)
        else:
            ins.append("")
    opt(bias, "B", (rng.standard_normal((dirs, 2 * g * hid)) * 0.3).astype(dtype))
    opt(lens is not None, "sequence_lens", np.array(lens if lens is not None else [], dtype=np.int32))
    opt(init_h, "initial_h", (rng.standard_normal(state) * 0.5).astype(dtype))
    if op == "LSTM":
        opt(init_c, "initial_c", (rng.standard_normal(state) * 0.5).astype(dtype))
        opt(peep, "P", (rng.standard_normal((dirs, 3 * hid)) * 0.3).astype(dtype))
    while ins and ins[-1] == "":
        ins.pop()
    n_out = 3 if op == "LSTM" else 2
    outs = [o for o in outputs[:n_out]]
    a = dict(hidden_size=hid, direction=direction)
    if opset >= 14:
        a["layout"] = layout
    a.update(attrs or {})
    node = helper.make_node(op, ins, outs, name=name, **a)
    y_shape = [seq, dirs, batch, hid] if layout == 0 else [batch, seq, dirs, hid]
    vis = []
    for o in outs:
        if o:
            vis.append(helper.make_tensor_value_info(o, elem, y_shape if o == "Y" else state))
    graph = helper.make_graph([node], name, [helper.make_tensor_value_info("X", elem, x_shape)], vis, inits)
    save(graph, name, out_dir, opset)


def nms_models(out_dir):
    cases = [("nms_corners", 0, 5, 0.5, 0.3, 2, 3, 40), ("nms_center_no_score", 1, 100, 0.3, None, 1, 2, 60),
             ("nms_iou0", 0, 3, 0.0, 0.9, 3, 1, 30), ("nms_max0", 0, 0, 0.5, None, 1, 1, 10),
             ("nms_iou1_center", 1, 7, 1.0, 0.5, 2, 2, 50)]
    for name, center, max_out, iou, score, batches, classes, n in cases:
        inits = [numpy_helper.from_array(np.array([max_out], dtype=np.int64), "max_out"),
                 numpy_helper.from_array(np.array([iou], dtype=np.float32), "iou")]
        ins = ["boxes", "scores", "max_out", "iou"]
        if score is not None:
            inits.append(numpy_helper.from_array(np.array([score], dtype=np.float32), "score"))
            ins.append("score")
        node = helper.make_node("NonMaxSuppression", ins, ["selected"], name=name, center_point_box=center)
        graph = helper.make_graph(
            [node], name,
            [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batches, n, 4]),
             helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batches, classes, n])],
            [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3])], inits)
        save(graph, name, out_dir, 13, empty_output=max_out == 0)


def einsum_models(out_dir):
    cases = [("einsum_attention", "bhqd,bhkd->bhqk", [[2, 3, 5, 4], [2, 3, 6, 4]]),
             ("einsum_ellipsis_broadcast", "...ij,...jk->...ik", [[2, 1, 3, 4], [1, 5, 4, 6]]),
             ("einsum_implicit", "ij,jk", [[3, 4], [4, 5]]),
             ("einsum_diagonal", "ii->i", [[4, 4]]),
             ("einsum_trace_implicit", "bii", [[3, 4, 4]]),
             ("einsum_three", "ij,jk,kl->li", [[2, 3], [3, 4], [4, 5]]),
             ("einsum_sum_all", "ijk->", [[2, 3, 4]]),
             ("einsum_outer_upper", "Ab,c->cbA", [[2, 3], [4]]),
             ("einsum_size1_label", "ij,ij->ij", [[3, 1], [3, 5]])]
    for name, eq, shapes in cases:
        names = [f"x{i}" for i in range(len(shapes))]
        out_shape = list(np.einsum(eq, *[np.zeros(sh, dtype=np.float32) for sh in shapes]).shape)
        node = helper.make_node("Einsum", names, ["y"], name=name, equation=eq)
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info(nm, TensorProto.FLOAT, sh)
                                                 for nm, sh in zip(names, shapes)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
        save(graph, name, out_dir, 13)


def mvn_models(out_dir):
    for name, axes, shape in [("mvn_default", None, [2, 3, 4, 5]), ("mvn_channels", [1], [2, 3, 4, 5]),
                              ("mvn_last_negative", [-1], [3, 7])]:
        attrs = {} if axes is None else {"axes": axes}
        node = helper.make_node("MeanVarianceNormalization", ["x"], ["y"], name=name, **attrs)
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
        save(graph, name, out_dir, 13)


def grid_sample_models(out_dir):
    for mode in ("bilinear", "nearest", "bicubic"):
        for pad in ("zeros", "border", "reflection"):
            for align in (0, 1):
                name = f"gridsample_{mode}_{pad}_{align}"
                # The random inputs are in [-1, 1): scaled by 1.6 so that the padding modes matter.
                scale = helper.make_node("Mul", ["grid", "spread"], ["g"], name=name + "_spread")
                node = helper.make_node("GridSample", ["x", "g"], ["y"], name=name, mode=mode, padding_mode=pad,
                                        align_corners=align)
                graph = helper.make_graph(
                    [scale, node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 7]),
                                          helper.make_tensor_value_info("grid", TensorProto.FLOAT, [2, 4, 6, 2])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4, 6])],
                    [numpy_helper.from_array(np.array([1.6], dtype=np.float32), "spread")])
                save(graph, name, out_dir, 16)


def unpool_models(out_dir):
    # MaxPool's Indices (over the whole tensor) unpooled into the pooled tensor's shape, and into
    # the default shape; Det of random matrices.
    for name, shape, given in [("maxunpool_output_shape", [2, 3, 7, 6], True), ("maxunpool_default", [2, 3, 6, 8], False)]:
        nodes = [helper.make_node("MaxPool", ["x"], ["p", "i"], kernel_shape=[2, 2], strides=[2, 2])]
        ins = ["p", "i"]
        if given:
            nodes.append(helper.make_node("Shape", ["x"], ["s"]))
            ins.append("s")
        nodes.append(helper.make_node("MaxUnpool", ins, ["y"], name=name, kernel_shape=[2, 2], strides=[2, 2]))
        out = shape if given else [shape[0], shape[1], shape[2] // 2 * 2, shape[3] // 2 * 2]
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)])
        save(graph, name, out_dir, 13)
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"], name="det")], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])])
    save(graph, "det_batched", out_dir, 13)


def roi_align_models(out_dir):
    rois = np.array([[0.5, 1.0, 9.0, 6.5], [2.0, 2.0, 3.0, 3.5], [-2.0, -1.5, 14.0, 12.0], [7.2, 0.3, 11.9, 9.9]],
                    dtype=np.float32)
    cases = [("roialign_avg_half_pixel", 16, dict(mode="avg", output_height=3, output_width=4, sampling_ratio=0)),
             ("roialign_max_ratio2_scale", 16, dict(mode="max", output_height=2, output_width=2, sampling_ratio=2,
                                                    spatial_scale=0.5)),
             ("roialign_avg_output_half_pixel", 16, dict(mode="avg", output_height=5, output_width=3,
                                                         coordinate_transformation_mode="output_half_pixel")),
             ("roialign_opset10_max", 10, dict(mode="max", output_height=4, output_width=4, sampling_ratio=0))]
    for name, opset, attrs in cases:
        node = helper.make_node("RoiAlign", ["x", "rois", "batch"], ["y"], name=name, **attrs)
        out = [4, 3, attrs["output_height"], attrs["output_width"]]
        graph = helper.make_graph(
            [node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 10, 12])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
            [numpy_helper.from_array(rois, "rois"), numpy_helper.from_array(np.array([0, 1, 1, 0], dtype=np.int64), "batch")])
        save(graph, name, out_dir, opset)


def loss_models(out_dir, rng):
    # NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss: random scores, constant targets (with
    # ignored positions where ignore_index is set), each reduction, with and without class weights.
    for name, op, shape, reduction, weighted, ignore in [
            ("nll_none_weight_negative_ii", "NegativeLogLikelihoodLoss", [3, 5, 4], "none", True, -1),
            ("nll_mean_weight_ii", "NegativeLogLikelihoodLoss", [2, 4, 3, 2], "mean", True, 1),
            ("nll_sum_nc", "NegativeLogLikelihoodLoss", [6, 5], "sum", False, None),
            ("sce_mean_weight_log_prob", "SoftmaxCrossEntropyLoss", [4, 6, 3], "mean", True, None),
            ("sce_none_ii", "SoftmaxCrossEntropyLoss", [3, 5, 2, 2], "none", False, 4),
            ("sce_mean_no_weight_ii", "SoftmaxCrossEntropyLoss", [5, 7], "mean", False, 0)]:
        c = shape[1]
        tshape = [shape[0]] + shape[2:]
        target = rng.integers(0, c, size=tshape).astype(np.int64)
        if ignore is not None:
            target.flat[::3] = ignore
        inits = [numpy_helper.from_array(target, "target")]
        ins = ["x", "target"]
        if weighted:
            inits.append(numpy_helper.from_array(rng.uniform(0.2, 2.0, size=[c]).astype(np.float32), "weight"))
            ins.append("weight")
        attrs = {"reduction": reduction}
        if ignore is not None:
            attrs["ignore_index"] = ignore
        log_prob = op == "SoftmaxCrossEntropyLoss" and name.endswith("log_prob")
        outs = ["loss", "log_prob"] if log_prob else ["loss"]
        node = helper.make_node(op, ins, outs, name=name, **attrs)
        out_info = [helper.make_tensor_value_info("loss", TensorProto.FLOAT, tshape if reduction == "none" else [])]
        if log_prob:
            out_info.append(helper.make_tensor_value_info("log_prob", TensorProto.FLOAT, shape))
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  out_info, inits)
        save(graph, name, out_dir, 13)


def signal_models(out_dir):
    # DFT (real and complex, forward and inverse, onesided, dft_length padding and truncating, axes
    # 1 and 2, a negative axis), the three windows periodic and symmetric (multiplied into a random
    # input so that the output depends on it), and a log-mel front-end: STFT with a Hann window,
    # power spectrum, MelWeightMatrix, Log.
    vi = helper.make_tensor_value_info
    const = lambda name, v, dt=np.int64: numpy_helper.from_array(np.array(v, dtype=dt), name)
    for name, shape, attrs, length in [("dft_real_axis1", [2, 12, 3, 1], {"axis": 1}, None),
                                       ("dft_complex_inverse_pad", [2, 5, 4, 2], {"axis": 2, "inverse": 1}, 6),
                                       ("dft_onesided_truncate", [3, 10, 1], {"onesided": 1}, 7),
                                       ("dft_complex_negative_axis", [2, 9, 2], {"axis": -2}, None)]:
        n = shape[attrs.get("axis", 1)] if length is None else length
        out = list(shape)
        out[attrs.get("axis", 1)] = n // 2 + 1 if attrs.get("onesided") else n
        out[-1] = 2
        ins, inits = ["x"], []
        if length is not None:
            ins.append("len")
            inits.append(const("len", length))
        node = helper.make_node("DFT", ins, ["y"], name=name, **attrs)
        save(helper.make_graph([node], name, [vi("x", TensorProto.FLOAT, shape)], [vi("y", TensorProto.FLOAT, out)], inits),
             name, out_dir, 17)
    nodes, outs = [helper.make_node("Identity", ["size"], ["size_id"])], []
    for op in ("HannWindow", "HammingWindow", "BlackmanWindow"):
        for periodic in (1, 0):
            w = f"{op}_{periodic}"
            nodes += [helper.make_node(op, ["size_id"], [w], name=w, periodic=periodic),
                      helper.make_node("Mul", ["x", w], ["y_" + w])]
            outs.append(vi("y_" + w, TensorProto.FLOAT, [2, 10]))
    save(helper.make_graph(nodes, "windows", [vi("x", TensorProto.FLOAT, [2, 10])], outs, [const("size", 10)]),
         "windows", out_dir, 17)
    # signal [2, 416, 1] -> 12 frames of 64 every 32 -> 33 bins -> 8 mel bands at 8 kHz, 100 Hz to 3.5 kHz.
    nodes = [helper.make_node("HannWindow", ["wlen"], ["win"], periodic=1),
             helper.make_node("STFT", ["x", "step", "win", "wlen"], ["spec"], name="stft", onesided=1),
             helper.make_node("Mul", ["spec", "spec"], ["sq"]),
             helper.make_node("ReduceSum", ["sq", "last"], ["power"], keepdims=0),
             helper.make_node("MelWeightMatrix", ["mels", "dftlen", "rate", "lo", "hi"], ["mel"], name="mel"),
             helper.make_node("MatMul", ["power", "mel"], ["melpow"]),
             helper.make_node("Add", ["melpow", "eps"], ["melpow_eps"]),
             helper.make_node("Log", ["melpow_eps"], ["logmel"])]
    inits = [const("last", [-1]), const("wlen", 64), const("step", 32), const("mels", 8), const("dftlen", 64), const("rate", 8000),
             const("lo", 100.0, np.float32), const("hi", 3500.0, np.float32), const("eps", 1e-6, np.float32)]
    save(helper.make_graph(nodes, "logmel", [vi("x", TensorProto.FLOAT, [2, 416, 1])],
                           [vi("logmel", TensorProto.FLOAT, [2, 12, 8]), vi("spec", TensorProto.FLOAT, [2, 12, 33, 2])],
                           inits), "logmel", out_dir, 17)
    # STFT of a complex signal, two-sided, frame_length without a window; MelWeightMatrix of an odd
    # dft_length.
    node = helper.make_node("STFT", ["x", "step", "", "flen"], ["y"], name="stft_complex", onesided=0)
    save(helper.make_graph([node], "stft_complex", [vi("x", TensorProto.FLOAT, [2, 50, 2])],
                           [vi("y", TensorProto.FLOAT, [2, 7, 16, 2])], [const("step", 5), const("flen", 16)]),
         "stft_complex", out_dir, 17)
    nodes = [helper.make_node("MelWeightMatrix", ["mels", "dftlen", "rate", "lo", "hi"], ["mel"], name="mel_odd"),
             helper.make_node("MatMul", ["x", "mel"], ["y"])]
    inits = [const("mels", 6), const("dftlen", 31), const("rate", 16000), const("lo", 0.0, np.float32),
             const("hi", 7000.0, np.float32)]
    save(helper.make_graph(nodes, "mel_odd", [vi("x", TensorProto.FLOAT, [3, 16])], [vi("y", TensorProto.FLOAT, [3, 6])],
                           inits), "mel_odd", out_dir, 17)


def control_flow_models(out_dir, rng):
    # If whose branches read outer values (a convolution's ReLU output, which quantization would fold
    # into the convolution, and an initializer), both branches
    # (the condition follows from the input's sign); Loop with a trip count, carried values, a
    # scan output and an outer read; Loop ended by its body's condition (no trip count); a Loop
    # whose body holds an If.
    vi = helper.make_tensor_value_info
    f32 = lambda name, shape: numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
    const = lambda name, v, dt=np.int64: numpy_helper.from_array(np.array(v, dtype=dt), name)
    then_g = helper.make_graph([helper.make_node("Mul", ["h", "two"], ["t_out"])], "then", [],
                               [vi("t_out", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Add", ["h", "bias"], ["e_out"])], "else", [],
                               [vi("e_out", TensorProto.FLOAT, None)])
    for name, cmp in (("if_then", "Greater"), ("if_else", "Less")):
        nodes = [helper.make_node("Conv", ["x", "w"], ["hc"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["hc"], ["h"]),
                 helper.make_node("Abs", ["x"], ["ax"]),
                 helper.make_node("ReduceSum", ["ax"], ["sx"], keepdims=0),
                 helper.make_node(cmp, ["sx", "zero"], ["c"]),
                 helper.make_node("If", ["c"], ["z"], name=name, then_branch=then_g, else_branch=else_g),
                 helper.make_node("Relu", ["z"], ["y"])]
        inits = [f32("w", [4, 3, 3, 3]), f32("bias", [1, 4, 1, 1]), const("two", 2.0, np.float32),
                 const("zero", 0.0, np.float32)]
        save(helper.make_graph(nodes, name, [vi("x", TensorProto.FLOAT, [2, 3, 5, 5])],
                               [vi("y", TensorProto.FLOAT, [2, 4, 5, 5])], inits), name, out_dir, 13)
    # acc' = acc * 0.5 + w + iteration; 5 trips; scan output: each acc'.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Mul", ["acc", "half"], ["a1"]), helper.make_node("Add", ["a1", "w"], ["a2"]),
         helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT), helper.make_node("Add", ["a2", "fi"], ["acc_out"]),
         helper.make_node("Identity", ["acc_out"], ["scan"])],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("acc", TensorProto.FLOAT, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", TensorProto.FLOAT, None), vi("scan", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Loop", ["trips", "yes", "x"], ["acc_final", "accs"], name="loop_trips", body=body)]
    inits = [const("trips", 5), const("yes", True, np.bool_), const("half", 0.5, np.float32), f32("w", [3, 4])]
    save(helper.make_graph(nodes, "loop_trips", [vi("x", TensorProto.FLOAT, [3, 4])],
                           [vi("acc_final", TensorProto.FLOAT, [3, 4]), vi("accs", TensorProto.FLOAT, [5, 3, 4])], inits),
         "loop_trips", out_dir, 13)
    # No trips: the scan output is [0] followed by its slice shape, which the body's shape inference
    # gives (its declaration leaves it open); lwc gave [0] alone until 2026-12-07.
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["acc", "w"], ["acc_out"]),
         helper.make_node("Identity", ["acc_out"], ["scan"])],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("acc", TensorProto.FLOAT, [3, 4])],
        [vi("cond_out", TensorProto.BOOL, []), vi("acc_out", TensorProto.FLOAT, [3, 4]), vi("scan", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Loop", ["none", "yes", "x"], ["acc_final", "accs"], name="loop_no_trips", body=body)]
    inits = [const("none", 0), const("yes", True, np.bool_), const("w", np.arange(12).reshape(3, 4) / 8, np.float32)]
    save(helper.make_graph(nodes, "loop_no_trips", [vi("x", TensorProto.FLOAT, [3, 4])],
                           [vi("acc_final", TensorProto.FLOAT, [3, 4]), vi("accs", TensorProto.FLOAT, [0, 3, 4])], inits),
         "loop_no_trips", out_dir, 13)
    # No trip count: the body says to go on while the iteration is below 3 (4 iterations); its If
    # doubles the carried value on even iterations and negates it on odd ones.
    then_g = helper.make_graph([helper.make_node("Add", ["v", "v"], ["tv"])], "even", [], [vi("tv", TensorProto.FLOAT, None)])
    else_g = helper.make_graph([helper.make_node("Neg", ["v"], ["ev"])], "odd", [], [vi("ev", TensorProto.FLOAT, None)])
    body = helper.make_graph(
        [helper.make_node("Less", ["i", "three"], ["cond_out"]),
         helper.make_node("Mod", ["i", "two_i"], ["parity"]), helper.make_node("Equal", ["parity", "zero_i"], ["even"]),
         helper.make_node("If", ["even"], ["v_out"], then_branch=then_g, else_branch=else_g)],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("v", TensorProto.FLOAT, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("v_out", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Loop", ["", "yes", "x"], ["v_final"], name="loop_while_if", body=body)]
    inits = [const("yes", True, np.bool_), const("three", 3), const("two_i", 2), const("zero_i", 0)]
    save(helper.make_graph(nodes, "loop_while_if", [vi("x", TensorProto.FLOAT, [2, 5])],
                           [vi("v_final", TensorProto.FLOAT, [2, 5])], inits), "loop_while_if", out_dir, 13)
    # Scan: a recurrence h' = tanh(h W + x_t) over x's axis 1 read backwards, a second scan input
    # along axis 0, a running sum as a second state, outputs stacked on axes 0 and 1 (the second
    # backwards); W is an outer read.
    body = helper.make_graph(
        [helper.make_node("MatMul", ["h", "W"], ["hw"]), helper.make_node("Add", ["hw", "xt"], ["pre"]),
         helper.make_node("Tanh", ["pre"], ["h2"]), helper.make_node("Add", ["acc", "ut"], ["acc2"]),
         helper.make_node("Identity", ["h2"], ["hs"]), helper.make_node("Mul", ["acc2", "h2"], ["prod"])],
        "body", [vi("h", TensorProto.FLOAT, [2, 4]), vi("acc", TensorProto.FLOAT, [2, 4]),
                 vi("xt", TensorProto.FLOAT, [2, 4]), vi("ut", TensorProto.FLOAT, [2, 4])],
        [vi("h2", TensorProto.FLOAT, [2, 4]), vi("acc2", TensorProto.FLOAT, [2, 4]), vi("hs", TensorProto.FLOAT, [2, 4]),
         vi("prod", TensorProto.FLOAT, [2, 4])])
    node = helper.make_node("Scan", ["h0", "a0", "x", "u"], ["h_last", "a_last", "hs_all", "prod_all"], name="scan", body=body,
                            num_scan_inputs=2, scan_input_axes=[1, 0], scan_input_directions=[1, 0],
                            scan_output_axes=[0, 1], scan_output_directions=[0, 1])
    save(helper.make_graph([node], "scan", [vi("h0", TensorProto.FLOAT, [2, 4]), vi("a0", TensorProto.FLOAT, [2, 4]),
                                            vi("x", TensorProto.FLOAT, [2, 6, 4]), vi("u", TensorProto.FLOAT, [6, 2, 4])],
                           [vi("h_last", TensorProto.FLOAT, [2, 4]), vi("a_last", TensorProto.FLOAT, [2, 4]),
                            vi("hs_all", TensorProto.FLOAT, [6, 2, 4]), vi("prod_all", TensorProto.FLOAT, [2, 6, 4])],
                           [f32("W", [4, 4])]), "scan", out_dir, 11)


def unique_models(out_dir):
    # Unique on values with repeats (the random input scaled and floored to a few integers, in
    # float): flattened sorted and in first-occurrence order, slices along an axis (sorted, and a
    # negative axis in first-occurrence order), all four outputs.
    vi = helper.make_tensor_value_info
    for name, shape, scale, attrs, y_shape in [
            ("unique_sorted", [4, 5], 3.0, {}, ["k"]), ("unique_first_seen", [4, 5], 3.0, {"sorted": 0}, ["k"]),
            ("unique_axis1", [2, 8, 1], 0.8, {"axis": 1}, [2, "k", 1]),
            ("unique_axis_negative_first_seen", [2, 8, 1], 0.8, {"axis": -2, "sorted": 0}, [2, "k", 1])]:
        nodes = [helper.make_node("Mul", ["x", "scale"], ["xs"]), helper.make_node("Floor", ["xs"], ["xf"]),
                 helper.make_node("Unique", ["xf"], ["y", "first", "inverse", "counts"], name=name, **attrs)]
        outs = [vi("y", TensorProto.FLOAT, y_shape), vi("first", TensorProto.INT64, ["k"]),
                vi("inverse", TensorProto.INT64, ["n"]), vi("counts", TensorProto.INT64, ["k"])]
        save(helper.make_graph(nodes, name, [vi("x", TensorProto.FLOAT, shape)], outs,
                               [numpy_helper.from_array(np.array([scale], dtype=np.float32), "scale")]), name, out_dir, 11)


def logmel_bench_models(out_dir):
    # For timing, not for ops_ort: a Whisper-like log-mel front-end, 10 s of 16 kHz audio, Hann
    # frames of 400 or 512 samples every 160, 80 mel bands (`lwc bench F --batch 1`).
    const = lambda name, v, dt=np.int64: numpy_helper.from_array(np.array(v, dtype=dt), name)
    for nfft in (400, 512):
        nodes = [helper.make_node("HannWindow", ["wlen"], ["win"]),
                 helper.make_node("STFT", ["x", "step", "win", "wlen"], ["spec"], onesided=1),
                 helper.make_node("Mul", ["spec", "spec"], ["sq"]),
                 helper.make_node("ReduceSum", ["sq", "last"], ["power"], keepdims=0),
                 helper.make_node("MelWeightMatrix", ["mels", "wlen", "rate", "lo", "hi"], ["mel"]),
                 helper.make_node("MatMul", ["power", "mel"], ["melpow"]),
                 helper.make_node("Add", ["melpow", "eps"], ["e"]), helper.make_node("Log", ["e"], ["logmel"])]
        inits = [const("last", [-1]), const("wlen", nfft), const("step", 160), const("mels", 80), const("rate", 16000),
                 const("lo", 0.0, np.float32), const("hi", 7900.0, np.float32), const("eps", 1e-6, np.float32)]
        frames = (160000 - nfft) // 160 + 1
        graph = helper.make_graph(nodes, "logmel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 160000, 1])],
                                  [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, [1, frames, 80])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="gen_op_models")
        model.ir_version = 8
        onnx.checker.check_model(model)  # not full_check: ONNX 1.12 miscounts STFT frames (lwc infers them itself)
        onnx.save(model, os.path.join(out_dir, f"bench_logmel_{nfft}.onnx"))


def torch_models(out_dir, seed):
    import torch

    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self, kind, hidden=32, layers=2, bidirectional=True):
            super().__init__()
            cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
            kw = {"nonlinearity": "relu"} if kind == "rnn" else {}
            self.rnn = cls(input_size=28, hidden_size=hidden, num_layers=layers, bidirectional=bidirectional,
                           batch_first=True, **kw)
            self.fc = torch.nn.Linear(hidden * (2 if bidirectional else 1), 10)

        def forward(self, x):  # x: [batch, 28, 28], rows as time steps
            y, _ = self.rnn(x)
            return self.fc(y[:, -1, :])

    # The two-layer bidirectional stacks, and wider layers whose step products span several of the
    # float32 kernel's 128-column blocks: bidirectional (each direction's thread runs them) and
    # forward only (the blocks shared between threads).
    nets = [(f"torch_{kind}", kind, {}) for kind in ("lstm", "gru", "rnn")]
    nets += [("torch_lstm_wide", "lstm", {"hidden": 96, "layers": 1}),
             ("torch_gru_wide", "gru", {"hidden": 96, "layers": 1, "bidirectional": False})]
    for name, kind, kw in nets:
        net = Net(kind, **kw).eval()
        x = torch.randn(2, 28, 28)
        torch.onnx.export(net, x, os.path.join(out_dir, f"{name}.onnx"), opset_version=14,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch exports")
    ap.add_argument("--bench", action="store_true",
                    help="also write bench_logmel_400/512.onnx (10 s of audio to log-mel; for timing, slow to cross-check)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    m = lambda *args, **kw: rnn_model(*args, out_dir=a.out, rng=rng, **kw)
    m("lstm_reverse_lens", "LSTM", direction="reverse", lens=[5, 2, 4], init_h=True, init_c=True)
    m("lstm_bidir_peep", "LSTM", direction="bidirectional", peep=True, init_h=True, init_c=True)
    m("lstm_bidir_lens_zero", "LSTM", direction="bidirectional", lens=[3, 0, 5])
    m("lstm_input_forget", "LSTM", attrs={"input_forget": 1}, peep=True)
    m("lstm_activations", "LSTM", direction="bidirectional",
      attrs={"activations": ["HardSigmoid", "Softsign", "ScaledTanh", "Sigmoid", "Elu", "Softplus"],
             "activation_alpha": [0.3, 0.8, 0.5], "activation_beta": [0.4, 1.2]})
    m("lstm_no_bias_only_yh", "LSTM", bias=False, outputs=("", "Y_h", ""))
    m("lstm_opset7", "LSTM", direction="reverse", opset=7, init_h=True)
    m("gru_reverse_lens", "GRU", direction="reverse", lens=[4, 5, 1], init_h=True)
    m("gru_bidir_lbr1", "GRU", direction="bidirectional", attrs={"linear_before_reset": 1}, init_h=True)
    m("gru_bidir_lbr0_lens", "GRU", direction="bidirectional", lens=[2, 5, 3])
    m("gru_activations", "GRU", attrs={"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.25, 0.1],
                                       "activation_beta": [0.45]})
    m("rnn_bidir_relu_lens", "RNN", direction="bidirectional", lens=[5, 1, 3],
      attrs={"activations": ["Relu", "Tanh"]}, init_h=True)
    m("rnn_reverse_leaky", "RNN", direction="reverse", attrs={"activations": ["LeakyRelu"], "activation_alpha": [0.2]})
    m("rnn_affine_thresholded", "RNN", direction="bidirectional",
      attrs={"activations": ["Affine", "ThresholdedRelu"], "activation_alpha": [0.7, 0.1], "activation_beta": [0.2]})
    nms_models(a.out)
    einsum_models(a.out)
    mvn_models(a.out)
    grid_sample_models(a.out)
    unpool_models(a.out)
    roi_align_models(a.out)
    loss_models(a.out, rng)
    signal_models(a.out)
    control_flow_models(a.out, rng)
    unique_models(a.out)
    if a.bench:
        logmel_bench_models(a.out)
    if not a.no_torch:
        torch_models(a.out, a.seed)


if __name__ == "__main__":
    main()
