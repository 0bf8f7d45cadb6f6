#!/usr/bin/env python3
"""tools/plot_run.py on a small metrics.jsonl writes a PNG; a missing, empty or malformed file is a clear
error with a non-zero exit. Exits 77 (CTest: skipped) where Python has no matplotlib."""
import json
import math
import os
import shutil
import subprocess
import sys

try:
    import matplotlib  # noqa: F401
except ImportError:
    print("skipped: no matplotlib; tools/setup.sh installs it")
    sys.exit(77)

tool, work = sys.argv[1], sys.argv[2]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(f"{work}/run")
with open(f"{work}/run/metrics.jsonl", "w") as f:
    for step in range(1, 21):
        loss = 5 * math.exp(-step / 8) + 2
        f.write(json.dumps({"step": step, "loss": loss, "lr": 1e-3, "tokens": 64 * step}) + "\n")
        if step % 5 == 0:
            f.write(json.dumps({"step": step, "validation_loss": loss + 0.1,
                                "validation_perplexity": math.exp(loss + 0.1), "tokens": 64 * step}) + "\n")


def plot(*args):
    return subprocess.run([sys.executable, tool, *args], capture_output=True, text=True)


result = plot(f"{work}/run", f"{work}/run/metrics.jsonl", "--labels", "a", "b", "--smooth", "0.6", "--x", "tokens",
              "-o", f"{work}/curves.png")
if result.returncode != 0:
    sys.exit(f"plot failed: {result.stderr}")
with open(f"{work}/curves.png", "rb") as f:
    if f.read(8) != b"\x89PNG\r\n\x1a\n":
        sys.exit("the output is not a PNG")

open(f"{work}/empty.jsonl", "w").close()
with open(f"{work}/bad.jsonl", "w") as f:
    f.write('{"step": 1, "loss": 2}\n{"step": 2, "loss"\n')
for args, message in [([f"{work}/missing"], "missing: no such file"),
                      ([f"{work}/empty.jsonl"], "empty.jsonl: no training or validation losses"),
                      ([f"{work}/bad.jsonl"], "bad.jsonl:2: not a JSON line"),
                      ([f"{work}/run", "--smooth", "1"], "--smooth must be in [0, 1)")]:
    result = plot(*args, "-o", f"{work}/never.png")
    if result.returncode == 0 or message not in result.stderr or os.path.exists(f"{work}/never.png"):
        sys.exit(f"{args}: expected a failure naming '{message}', got {result.returncode}: {result.stderr}")
print("plot_run.py: PNG written; missing, empty and malformed inputs rejected")
