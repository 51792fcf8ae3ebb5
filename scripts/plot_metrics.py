#!/usr/bin/env python3
"""Draws a `coco train` run's metrics.jsonl as one PNG: `coco plot RUN [--out FILE.png]` runs this script.

Panels, against the optimizer step: the weighted total loss; its components (mlm_loss, rtd_loss, clm_loss,
cl_loss); the accuracies (mlm_acc, rtd_acc, clm_acc, cl_acc); the learning rate; the throughput (tokens_per_s);
the gradient norm with skipped steps marked. Training records are lines, held-out evaluations (records with
"split": "valid") are dashed lines with markers in the same colour. Metric names are those of metrics.jsonl
(docs/metrics.md explains them).

Exit codes: 0 written, 2 bad input (no metrics.jsonl, no training records), 1 missing matplotlib or another failure.
"""
import argparse
import json
import os
import sys

LOSS_COMPONENTS = ["mlm_loss", "rtd_loss", "clm_loss", "cl_loss"]
ACCURACIES = ["mlm_acc", "rtd_acc", "clm_acc", "cl_acc"]


def fail(message, code):
    print(f"coco plot: {message}", file=sys.stderr)
    sys.exit(code)


def load_matplotlib():
    try:
        import matplotlib
    except ImportError as error:
        fail(
            f"matplotlib is not installed for {sys.executable} ({error}). Install it with scripts/setup.sh, or "
            "`python3 -m pip install matplotlib` (Debian: `apt-get install python3-matplotlib`)",
            1,
        )
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def read_records(path):
    """Training and held-out records; lines that do not parse (a torn write of a killed run) are skipped."""
    train, valid, skipped = [], [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                skipped += 1
                continue
            (valid if record.get("split") == "valid" else train).append(record)
    return train, valid, skipped


def series(records, key):
    """(steps, values) of the records that have `key`; null (non-finite) becomes NaN, a gap in the line."""
    steps, values = [], []
    for r in records:
        if key in r:
            steps.append(r["step"])
            values.append(float("nan") if r[key] is None else float(r[key]))
    return steps, values


def plot_keys(ax, train, valid, keys, title, ylabel):
    """One line per key for training records; held-out records as dots on a dashed line of the same colour."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    handles = []
    for i, key in enumerate(keys):
        steps, values = series(train, key)
        if not steps:
            continue
        (line,) = ax.plot(steps, values, label=key, linewidth=1.4, color=f"C{i}")
        handles.append(line)
        steps, values = series(valid, key)
        if steps:
            ax.plot(steps, values, "o--", color=line.get_color(), markersize=5, linewidth=1)
    if handles and any(series(valid, h.get_label())[0] for h in handles):
        handles.append(Line2D([], [], color="gray", linestyle="--", marker="o", markersize=5, label="held-out"))
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if handles:
        ax.legend(handles=handles, fontsize=8)


def main():
    parser = argparse.ArgumentParser(prog="coco plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", metavar="RUN", help="a run directory (with metrics.jsonl) or a metrics.jsonl file")
    parser.add_argument("--out", metavar="FILE.png", help="the PNG to write (default: RUN/metrics.png)")
    args = parser.parse_args()

    run_dir = args.run if os.path.isdir(args.run) else os.path.dirname(args.run) or "."
    metrics = os.path.join(args.run, "metrics.jsonl") if os.path.isdir(args.run) else args.run
    if not os.path.isfile(metrics):
        fail(f"{metrics}: not found; expected a run directory written by `coco train` or its metrics.jsonl", 2)
    out = args.out or os.path.join(run_dir, "metrics.png")
    if not out.lower().endswith(".png"):
        fail(f"--out {out}: expected a file name ending in .png", 2)

    train, valid, skipped = read_records(metrics)
    if not train:
        fail(f"{metrics}: no training records (lines with a \"step\" and no \"split\": \"valid\"); nothing to plot", 2)
    if skipped:
        print(f"coco plot: {metrics}: skipped {skipped} line(s) that are not metric records", file=sys.stderr)

    preset = ""
    config_path = os.path.join(run_dir, "config.json")
    if os.path.isfile(config_path):
        try:
            with open(config_path, encoding="utf-8") as f:
                preset = json.load(f).get("objective", {}).get("preset", "")
        except (OSError, json.JSONDecodeError, AttributeError):
            preset = ""

    plt = load_matplotlib()
    figure, axes = plt.subplots(3, 2, figsize=(13, 11), dpi=100)
    plot_keys(axes[0][0], train, valid, ["loss"], "loss (weighted total)", "loss")
    plot_keys(axes[0][1], train, valid, LOSS_COMPONENTS, "loss components", "loss")
    plot_keys(axes[1][0], train, valid, ACCURACIES, "accuracies", "accuracy")
    axes[1][0].set_ylim(-0.02, 1.02)
    plot_keys(axes[1][1], train, [], ["lr"], "learning rate", "lr")
    plot_keys(axes[2][0], train, [], ["tokens_per_s"], "throughput", "tokens / s")
    plot_keys(axes[2][1], train, [], ["grad_norm"], "gradient norm (before clipping)", "grad_norm")
    skipped_steps = [r["step"] for r in train if r.get("skipped")]
    if skipped_steps:
        axes[2][1].scatter(skipped_steps, [0] * len(skipped_steps), marker="x", color="red", label="skipped step")
        axes[2][1].legend(fontsize=8)
    last = train[-1]["step"]
    title = f"{os.path.abspath(run_dir)}: {len(train)} training records to step {last}"
    if valid:
        title += f", {len(valid)} held-out"
    if preset:
        title += f" ({preset} preset)"
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    try:
        figure.savefig(out, dpi=100)
    except OSError as error:
        fail(f"{out}: cannot write the PNG: {error}", 1)
    print(f"coco plot: wrote {out} ({len(train)} training records to step {last}, {len(valid)} held-out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
