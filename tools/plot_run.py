#!/usr/bin/env python3
"""Plots training runs' curves from their metrics.jsonl to one PNG: training and validation loss (left)
and validation perplexity (right) against optimizer steps or tokens, one colour per run.

    python3 tools/plot_run.py runs/kjv/train -o kjv.png
    python3 tools/plot_run.py runs/a runs/b --labels dense plain --x tokens --smooth 0.9 -o compare.png

A run is its output_dir (holding metrics.jsonl) or the metrics.jsonl file itself. Needs matplotlib
(tools/setup.sh installs it, pinned)."""
import argparse
import json
import os
import sys


def fail(message):
    sys.exit(f"plot_run.py: error: {message}")


def read_metrics(run):
    path = os.path.join(run, "metrics.jsonl") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        fail(f"{path}: no such file (give a run's output_dir or its metrics.jsonl)")
    train, validation = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path}:{number}: not a JSON line ({e.msg})")
            if "loss" in entry:
                train.append(entry)
            if "validation_loss" in entry:
                validation.append(entry)
    if not train and not validation:
        fail(f"{path}: no training or validation losses in it (empty, or the run has not logged yet)")
    return train, validation


def smoothed(values, weight):
    """TensorBoard's smoothing: an exponential moving average, debiased at the start. weight 0: none."""
    out, average = [], 0.0
    for i, value in enumerate(values, 1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i) if weight > 0 else value)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run output folders or metrics.jsonl files")
    parser.add_argument("-o", "--output", default="curves.png", help="PNG to write (default: curves.png)")
    parser.add_argument("--labels", nargs="+", help="one legend label per run (default: the folder names)")
    parser.add_argument("--x", choices=["step", "tokens"], default="step", help="horizontal axis")
    parser.add_argument("--smooth", type=float, default=0.0,
                        help="exponential smoothing of the training loss, 0 (none) to below 1, as TensorBoard's")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args()
    if not 0 <= args.smooth < 1:
        fail(f"--smooth must be in [0, 1), got {args.smooth}")
    if args.labels and len(args.labels) != len(args.runs):
        fail(f"{len(args.labels)} labels for {len(args.runs)} runs")
    labels = args.labels or [os.path.basename(os.path.normpath(r if os.path.isdir(r) else os.path.dirname(r) or "."))
                             for r in args.runs]
    runs = [read_metrics(r) for r in args.runs]  # all read (and checked) before anything is drawn

    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    figure, (loss_axes, perplexity_axes) = plt.subplots(1, 2, figsize=(13, 4.8))
    for index, ((train, validation), label) in enumerate(zip(runs, labels)):
        colour = f"C{index}"
        if train:
            x = [e[args.x] for e in train]
            loss = [e["loss"] for e in train]
            if args.smooth > 0:
                loss_axes.plot(x, loss, color=colour, alpha=0.25, linewidth=1)
            loss_axes.plot(x, smoothed(loss, args.smooth), color=colour, linewidth=1.5, label=f"{label} train")
        if validation:
            x = [e[args.x] for e in validation]
            loss_axes.plot(x, [e["validation_loss"] for e in validation], color=colour, linestyle="--", marker="o",
                           markersize=3, label=f"{label} validation")
            perplexity_axes.plot(x, [e["validation_perplexity"] for e in validation], color=colour, marker="o",
                                 markersize=3, label=label)
    axis_name = "optimizer step" if args.x == "step" else "tokens"
    loss_axes.set(xlabel=axis_name, ylabel="cross-entropy (nats/token)", title="loss")
    perplexity_axes.set(xlabel=axis_name, ylabel="perplexity", title="validation perplexity", yscale="log")
    for axes in (loss_axes, perplexity_axes):
        axes.grid(alpha=0.3)
        if axes.has_data():
            axes.legend(fontsize=8)
    if args.title:
        figure.suptitle(args.title)
    figure.tight_layout()
    # Written beside the target and renamed, so an interrupted plot never leaves a half PNG.
    temporary = f"{args.output}.tmp-{os.getpid()}.png"
    try:
        figure.savefig(temporary, dpi=110)
        os.replace(temporary, args.output)
    except OSError as e:
        if os.path.exists(temporary):
            os.remove(temporary)
        fail(f"{args.output}: cannot write ({e.strerror})")
    print(f"wrote {args.output} ({len(runs)} run{'s' if len(runs) > 1 else ''}, x = {axis_name})")


if __name__ == "__main__":
    main()
