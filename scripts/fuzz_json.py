#!/usr/bin/env python3
"""Feeds lwc broken variants of the JSON files users write and checks that every command either
succeeds or fails cleanly: exit code 0 with the output written, or exit code 1 (3 for a failed
quality gate) with one "lwc: error: ..." line and no output file. A crash, an internal error (exit code 2), a hang or an
error that spans several lines fails the run.

    scripts/fuzz_json.py [--count N] [--seed S] [--lwc build/apps/lwc/lwc] [--keep DIR]

The files: every pipeline under configs/ (run by `lwc run` on lenet5 with the bundled sample as
data), the text form of their passes (`lwc run --passes TEXT`; text edits only), the sample's
preprocess.json (`lwc eval --preprocess`) and calibration statistics saved by
`lwc quantize --save-calib` (`lwc quantize --load-calib`). Each variant applies one to three edits
at random places of the JSON tree: a value replaced by one of another type or out of range (null,
booleans, 0, -1, 2^31, 2^63, 1e308, NaN, an empty or long string, [], {}, a mixed list), a key
removed, an unknown key added, a list emptied or its first element repeated; one variant in eight
instead gets text edits (a number token replaced by 1e999 or -0, bytes cut or flipped).
Deterministic for a given seed. Exit code 1 when any run failed.
"""
import argparse
import copy
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

from fuzz_models import run_lwc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "testdata", "lenet5_fmnist.onnx")
SAMPLE = os.path.join(ROOT, "testdata", "fmnist_sample")
REPLACEMENTS = [None, True, False, 0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1e308, -1e308, 0.5, "NaN", "", "x" * 300,
                "fold_constants", "lsq", [], {}, [1, "a", None], {"pass": "x"}, -0.0, 1e-320]


def paths(v, prefix=()):
    """Every place in the tree, as a tuple of keys and indices ('' is the root)."""
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from paths(x, prefix + (k,))
    elif isinstance(v, list):
        # Long lists (a histogram's 2048 counts) would draw nearly every edit: their first three
        # entries and the last stand for the rest, so the keys around them get edited too.
        for i, x in enumerate(v):
            if len(v) <= 8 or i < 3 or i == len(v) - 1:
                yield from paths(x, prefix + (i,))


def get(v, p):
    for k in p:
        v = v[k]
    return v


def mutate(doc, rng):
    """One random edit of doc (in place, unless the root is replaced); returns (doc, description)."""
    p = rng.choice(list(paths(doc)))
    where = "/".join(map(str, p)) or "(root)"
    kind = rng.randrange(5)
    if not p:
        return copy.deepcopy(rng.choice(REPLACEMENTS)), "root replaced"
    parent, key = get(doc, p[:-1]), p[-1]
    if kind <= 1:
        val = copy.deepcopy(rng.choice(REPLACEMENTS))
        parent[key] = val
        return doc, f"{where} = {json.dumps(val)[:40]}"
    if kind == 2:
        del parent[key]
        return doc, f"{where} removed"
    target = get(doc, p)
    if kind == 3 and isinstance(target, dict):
        target[rng.choice(["x", "options", "pass", "path", "limit", "eval", "calib", "gates"])] = copy.deepcopy(rng.choice(REPLACEMENTS))
        return doc, f"key added under {where}"
    if isinstance(target, list) and target:
        if rng.random() < 0.5:
            target.clear()
            return doc, f"{where} emptied"
        target.insert(0, copy.deepcopy(target[0]))
        return doc, f"{where}[0] repeated"
    parent[key] = copy.deepcopy(rng.choice(REPLACEMENTS))
    return doc, f"{where} replaced"


PASSES_ALPHABET = b'{}[],="=:0123456789.-e aZ_\xff'


def text_edits(data, rng, alphabet=b'{}[]",:0aZ\\\x00\xff'):
    """Edits of the bytes (not always UTF-8 after) of a file or argument."""
    numbers = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", data)]
    if numbers and rng.random() < 0.5:
        a, b = rng.choice(numbers)
        return data[:a] + rng.choice([b"1e999", b"-1e999", b"-0", b"1" * 40, b"0x10"]) + data[b:], "a number token"
    b = bytearray(data)
    for _ in range(rng.choice([1, 2, 4])):
        off = rng.randrange(len(b))
        if rng.random() < 0.5:
            b[off] = rng.choice(alphabet)
        elif rng.random() < 0.7:
            del b[off:off + rng.randrange(1, 8)]
        else:
            end = off + rng.randrange(1, 24)
            b[off:off] = b[off:end]  # a span repeated
    return bytes(b), "bytes"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=60, help="variants per file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    ap.add_argument("--keep", help="folder for the variants that failed")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per command")
    ap.add_argument("--show", action="store_true", help="print every run's outcome, not only the failures")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    runs = bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        # The pipelines name their data relative to configs/: mirror that layout.
        os.makedirs(os.path.join(tmp, "configs"))
        os.symlink(os.path.join(ROOT, "testdata"), os.path.join(tmp, "testdata"))
        calib = os.path.join(tmp, "ranges.json")
        r = subprocess.run([args.lwc, "-q", "quantize", MODEL, "--calib", SAMPLE, "--calib-limit", "64", "--save-calib",
                            calib, "--bench-batch", "0", "-o", os.path.join(tmp, "q.onnx")], capture_output=True)
        if r.returncode != 0:
            sys.exit(f"fuzz_json: lwc quantize --save-calib failed: {r.stderr.decode()}")
        out = os.path.join(tmp, "out.onnx")
        files = []  # (name, text, command taking the variant's path)
        for name in sorted(os.listdir(os.path.join(ROOT, "configs"))):
            if name.endswith(".json") and name != "pipeline.schema.json":
                files.append((name, open(os.path.join(ROOT, "configs", name)).read(),
                              lambda v: ["run", v, MODEL, "-o", out]))
        # The text form of a pipeline (`lwc run --passes "a,b{key=value}"`), from the configs' passes.
        steps = []
        for name in ("cleanup.json", "int8_static.json", "deep_compression.json"):
            for st in json.load(open(os.path.join(ROOT, "configs", name)))["passes"]:
                if isinstance(st, str):
                    steps.append(st)
                else:
                    opts = ",".join(f"{k}={json.dumps(v)}" for k, v in st.get("options", {}).items())
                    steps.append(st["pass"] + ("{" + opts + "}" if opts else ""))
        files.append(("passes.txt", ",".join(dict.fromkeys(steps)),
                      lambda v: ["run", "--passes", open(v, "rb").read(), MODEL, "--calib", SAMPLE, "--calib-limit", "64",
                                 "-o", out]))
        files.append(("preprocess.json", open(os.path.join(SAMPLE, "preprocess.json")).read(),
                      lambda v: ["eval", MODEL, "--data", os.path.join(SAMPLE, "images.npy"), "--preprocess", v,
                                 "--limit", "64"]))
        files.append(("ranges.json", open(calib).read(),
                      lambda v: ["quantize", MODEL, "--load-calib", v, "--bench-batch", "0", "--layer-samples", "0",
                                 "-o", out]))
        for name, text, command in files:
            base = json.loads(text) if name.endswith(".json") else None
            for i in range(args.count):
                if base is None:  # the text form: edits of its grammar's characters, numbers and spans
                    data, descs = text.encode(), []
                    for _ in range(rng.choice([1, 1, 2, 3])):
                        data, d = text_edits(data, rng, PASSES_ALPHABET)
                        descs.append(d)
                    data = data.replace(b"\0", b"")  # a command-line argument cannot hold one
                    what = "text edits: " + ", ".join(descs)
                elif rng.random() < 0.125:
                    data, what = text_edits(text.encode(), rng)
                    what = "text edits: " + what
                else:
                    doc, descs = copy.deepcopy(base), []
                    for _ in range(rng.choice([1, 1, 2, 3])):
                        doc, d = mutate(doc, rng)
                        descs.append(d)
                    data, what = json.dumps(doc, allow_nan=True).encode(), "; ".join(descs)
                path = os.path.join(tmp, "configs", "variant_" + name)
                with open(path, "wb") as f:
                    f.write(data)
                cmd = command(path)
                runs += 1
                rc, lines = run_lwc(args.lwc, cmd, args.timeout)
                wrote = os.path.exists(out)
                # nlohmann's own wording ("[json.exception.type_error.302] ...") means a value went unchecked.
                one_error = len(lines) == 1 and lines[0].startswith("lwc: error: ") and not wrote and \
                    "json.exception" not in lines[0]
                clean = (rc == 0 and (wrote or "-o" not in cmd)) or (rc == 1 and one_error) or \
                        (rc == 3 and one_error and "quality gate failed" in lines[0])
                if args.show:
                    print(f"{name} {i} ({what[:60]}): exit {rc}: {(lines or [''])[-1][:160]}", flush=True)
                if not clean:
                    bad += 1
                    print(f"{name} variant {i} ({what}): lwc {cmd[0]}: exit {rc}"
                          f"{'' if wrote else ', no output'}: {' | '.join(lines)[-300:]}", flush=True)
                    if args.keep:
                        os.makedirs(args.keep, exist_ok=True)
                        shutil.copy(path, os.path.join(args.keep, f"{name[:-5]}_{args.seed}_{i}.json"))
                if wrote:
                    os.remove(out)
    print(f"fuzz_json: {len(files)} files, {runs} lwc runs, {bad} not clean")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
