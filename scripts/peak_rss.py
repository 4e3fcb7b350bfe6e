#!/usr/bin/env python3
"""Runs a command and reports its peak resident set size; fails when it exceeds --max-mb.

    scripts/peak_rss.py [--max-mb 200] -- COMMAND ARGS...
"""
import argparse
import resource
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--max-mb", type=float, default=0)
ap.add_argument("cmd", nargs=argparse.REMAINDER)
a = ap.parse_args()
cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0  # kB on Linux
print(f"peak RSS {peak_mb:.1f} MB: {' '.join(cmd)}")
if r.returncode != 0:
    print(f"command failed with exit code {r.returncode}")
    sys.exit(1)
if a.max_mb and peak_mb > a.max_mb:
    print(f"FAILED: above the limit of {a.max_mb:.0f} MB")
    sys.exit(1)
