#!/usr/bin/env python3
"""Validates every pipeline under configs/ against configs/pipeline.schema.json and every pass
name and option against what `lwc passes --json` declares. Exit code 0 when all are valid.

    scripts/check_configs.py --lwc build/apps/lwc/lwc
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import jsonschema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = {"bool": bool, "int": int, "float": (int, float), "string": str}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lwc", default=os.path.join(ROOT, "build/apps/lwc/lwc"))
    args = ap.parse_args()
    with open(os.path.join(ROOT, "configs/pipeline.schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    declared = json.loads(subprocess.run([args.lwc, "passes", "--json"], check=True, capture_output=True, text=True).stdout)
    passes = {p["name"]: {o["name"]: o for o in p["options"]} for p in declared["passes"]}
    gates = {g["name"] for g in declared["gates"]}
    if gates != set(schema["properties"]["gates"]["properties"]):
        print(f"schema gates {sorted(schema['properties']['gates']['properties'])} != lwc gates {sorted(gates)}")
        return 1
    bad = 0
    files = sorted(f for f in glob.glob(os.path.join(ROOT, "configs/*.json")) if not f.endswith("schema.json"))
    for path in files:
        name = os.path.relpath(path, ROOT)
        with open(path) as f:
            cfg = json.load(f)
        errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(cfg)]
        for i, step in enumerate(cfg.get("passes", [])):
            pname = step if isinstance(step, str) else step.get("pass")
            if pname not in passes:
                errors.append(f"passes[{i}]: unknown pass {pname}")
                continue
            for k, v in ({} if isinstance(step, str) else step.get("options", {})).items():
                spec = passes[pname].get(k)
                if spec is None:
                    errors.append(f"passes[{i}].options.{k}: unknown option")
                elif spec["type"] in TYPES and not isinstance(v, TYPES[spec["type"]]):
                    errors.append(f"passes[{i}].options.{k}: expected {spec['type']}")
        print(f"{name}: {'ok' if not errors else 'INVALID'}")
        for e in errors:
            print(f"  {e}")
        bad += bool(errors)
    print(f"{len(files)} pipelines, {bad} invalid")
    return 1 if bad or not files else 0


if __name__ == "__main__":
    sys.exit(main())
