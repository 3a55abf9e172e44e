#!/usr/bin/env python3
"""Turns the JSON of bench_step, bench_kernels and bench_libtorch into docs/benchmarks.md.

Medians of repetitions; every ratio is taken between rows of the same run on the same machine.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import subprocess

BATCHES = [1, 32, 128, 512, 2048]
MODES = ["trainable", "frozen", "forward_only"]
# GEMMs of one default-model step per mode (names from bench_kernels' step_gemms).
FLOOR_SETS = {
    "trainable": ["fwd_784x256", "fwd_256x256", "fwd_256x10", "dW_784x256", "dW_256x256",
                  "dW_head", "dX_256x256", "dX_head"],
    "frozen": ["fwd_784x256", "fwd_256x256", "fwd_256x10", "dW_head"],
    "forward_only": ["fwd_784x256", "fwd_256x256", "fwd_256x10"],
}
UNIT = {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}


def load(path):
    """{normalised row name: (median ms, counters)} and the run's context."""
    with open(path) as f:
        data = json.load(f)
    rows, has_median = {}, any(b.get("aggregate_name") == "median" for b in data["benchmarks"])
    for b in data["benchmarks"]:
        if has_median and b.get("aggregate_name") != "median":
            continue
        name = re.sub(r"_(median|mean|stddev|cv)$", "", b.get("run_name", b["name"]))
        name = re.sub(r"/(manual_time|real_time)$", "", name)
        name = name.replace("BM_Step/cpu/", "BM_Step/")
        rows[name] = (b["real_time"] * UNIT[b["time_unit"]], b)
    return rows, data.get("context", {})


def fmt(x, digits=3):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def ratio(a, b):
    return a / b if a is not None and b else None


def svg_lines(path, title, series, ylabel, log_y=False, ref=None):
    """A small line chart of series {name: [(batch, value)]} against batch (log x)."""
    w, h, left, bottom, top, right = 560, 320, 60, 40, 30, 150
    xs = [math.log2(b) for b in BATCHES]
    values = [v for pts in series.values() for _, v in pts if v]
    if ref:
        values.append(ref)
    lo, hi = (min(values), max(values)) if values else (0, 1)
    if log_y:
        lo, hi = math.log10(lo), math.log10(hi)
    else:
        lo = 0
    hi = hi * 1.1 if not log_y else hi + 0.1
    sx = lambda x: left + (x - xs[0]) / (xs[-1] - xs[0]) * (w - left - right)
    sy = lambda v: h - bottom - ((math.log10(v) if log_y else v) - lo) / (hi - lo) * (h - bottom - top)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2 - 60}" y="18" font-size="13">{title}</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="black"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="black"/>',
           f'<text x="{(w - right) / 2}" y="{h - 8}">batch size</text>',
           f'<text x="10" y="{top - 8}">{ylabel}</text>']
    for b, x in zip(BATCHES, xs):
        out.append(f'<text x="{sx(x) - 8}" y="{h - bottom + 14}">{b}</text>')
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        label = 10 ** v if log_y else v
        y = h - bottom - (v - lo) / (hi - lo) * (h - bottom - top)
        out.append(f'<text x="6" y="{y + 4}">{fmt(label, 2)}</text>')
        out.append(f'<line x1="{left}" y1="{y}" x2="{w - right}" y2="{y}" stroke="#ddd"/>')
    if ref:
        out.append(f'<line x1="{left}" y1="{sy(ref)}" x2="{w - right}" y2="{sy(ref)}" stroke="#999" stroke-dasharray="4"/>')
    for k, (name, pts) in enumerate(series.items()):
        c = colors[k % len(colors)]
        pts = [(math.log2(b), v) for b, v in pts if v]
        d = " ".join(f"{sx(x):.1f},{sy(v):.1f}" for x, v in pts)
        out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for x, v in pts:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(v):.1f}" r="3" fill="{c}"/>')
        out.append(f'<text x="{w - right + 10}" y="{top + 16 * k + 10}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def machine():
    cpu = platform.processor() or "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    gxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return cpu, gxx


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--kernels", required=True)
    ap.add_argument("--libtorch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--plots", required=True)
    a = ap.parse_args()
    ours, ctx = load(a.ours)
    kern, _ = load(a.kernels)
    torch, tctx = load(a.libtorch)

    def t(rows, model, mode, b):
        r = rows.get(f"BM_Step/{model}/{mode}/{b}")
        return r[0] if r else None

    def counter(model, mode, b, key):
        r = ours.get(f"BM_Step/{model}/{mode}/{b}")
        return r[1].get(key) if r else None

    def floor(mode, b):
        parts = [kern.get(f"BM_Gemm/cpu/{g}/{b}") for g in FLOOR_SETS[mode]]
        return sum(p[0] for p in parts) if all(parts) else None

    cpu, gxx = machine()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = ["# Benchmarks: what a frozen backbone saves, against LibTorch and the GEMM floor", "",
         f"Taken {now} on `{cpu}`, {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz; "
         f"{gxx}; `-O3 -march=native`; our GEMMs are Eigen {''}3.4 split over our thread pool. "
         f"LibTorch {tctx.get('libtorch_version', '?')} with {tctx.get('torch_threads', '?')} threads on "
         f"{tctx.get('blas', '?')} (OMP_WAIT_POLICY={tctx.get('OMP_WAIT_POLICY', '?')}). "
         "Medians of repetitions; ratios within this one run. Produced by `bash bench/compare.sh`.", "",
         "One step = forward, cross-entropy, backward, SGD (lr 0.01, momentum 0.9) and zero_grad, on "
         "a fixed random batch. *frozen*: backbone `requires_grad_(false)` (Fix after task 1), only "
         "the head trains. *forward only*: `NoGradGuard`, the floor a frozen step should approach. "
         "The GEMM floor is the sum of our GEMM kernel's medians at exactly the step's product shapes.", "",
         "## Default model 784→256→256 + 256→10 (ms per step)", "",
         "| batch | ours trainable | ours frozen | ours fwd-only | LibTorch trainable | LibTorch frozen | LibTorch fwd-only |",
         "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in BATCHES:
        L.append(f"| {b} | " + " | ".join(fmt(t(ours, "default", m, b)) for m in MODES) + " | "
                 + " | ".join(fmt(t(torch, "default", m, b)) for m in MODES) + " |")
    L += ["", "## Ratios (default model)", "",
          "| batch | ours/LibTorch trainable | ours/LibTorch frozen | frozen/trainable ours | frozen/trainable LibTorch | frozen/fwd-only ours | frozen/fwd-only LibTorch | ours/GEMM floor trainable | ours/GEMM floor frozen |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in BATCHES:
        o = {m: t(ours, "default", m, b) for m in MODES}
        q = {m: t(torch, "default", m, b) for m in MODES}
        L.append(f"| {b} | {fmt(ratio(o['trainable'], q['trainable']))} | {fmt(ratio(o['frozen'], q['frozen']))} | "
                 f"{fmt(ratio(o['frozen'], o['trainable']))} | {fmt(ratio(q['frozen'], q['trainable']))} | "
                 f"{fmt(ratio(o['frozen'], o['forward_only']))} | {fmt(ratio(q['frozen'], q['forward_only']))} | "
                 f"{fmt(ratio(o['trainable'], floor('trainable', b)))} | {fmt(ratio(o['frozen'], floor('frozen', b)))} |")

    # The targets, each met or not.
    L += ["", "## Targets", "", "| target | measured | met |", "| --- | --- | :-: |"]

    def target(label, value, limit):
        ok = value is not None and value <= limit
        L.append(f"| {label} ≤ {limit} | {fmt(value)} | {'yes' if ok else 'no'} |")

    for b, limit in [(1, 0.2), (32, 0.7), (128, 0.7), (2048, 0.95)]:
        for m in ["trainable", "frozen"]:
            target(f"ours/LibTorch {m}, batch {b}", ratio(t(ours, "default", m, b), t(torch, "default", m, b)), limit)
    for b in [512, 2048]:
        for m in ["trainable", "frozen"]:
            target(f"ours/GEMM floor {m}, batch {b}", ratio(t(ours, "default", m, b), floor(m, b)), 1.15)
    for b in [128, 512, 2048]:
        target(f"frozen/forward-only, batch {b}",
               ratio(t(ours, "default", "frozen", b), t(ours, "default", "forward_only", b)), 1.10)

    L += ["", "## Graph and memory counters (ours, per step)", "",
          "| batch | nodes trainable | nodes frozen | saved bytes trainable | saved bytes frozen | peak memory frozen |",
          "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b in BATCHES:
        L.append(f"| {b} | {fmt(counter('default', 'trainable', b, 'nodes'))} | {fmt(counter('default', 'frozen', b, 'nodes'))} | "
                 f"{fmt(counter('default', 'trainable', b, 'saved_bytes'))} | {fmt(counter('default', 'frozen', b, 'saved_bytes'))} | "
                 f"{fmt(counter('default', 'frozen', b, 'peak_mem'))} |")
    L += ["", "A frozen step records two nodes (the head's linear and the loss) and saves only the "
          "head's input and the loss's logits, labels and logsumexp: no backbone activation.", ""]

    L += ["## Deep (8×256) and wide (1024→4096→4096 + 4096→100) models (ms per step)", "",
          "| model | batch | ours trainable | ours frozen | LibTorch trainable | LibTorch frozen | ours/LibTorch trainable | ours/LibTorch frozen |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for model, batches in [("deep", [1, 128, 512]), ("wide", [1, 32, 128])]:
        for b in batches:
            o, q = (t(ours, model, "trainable", b), t(ours, model, "frozen", b)), (t(torch, model, "trainable", b), t(torch, model, "frozen", b))
            L.append(f"| {model} | {b} | {fmt(o[0])} | {fmt(o[1])} | {fmt(q[0])} | {fmt(q[1])} | {fmt(ratio(o[0], q[0]))} | {fmt(ratio(o[1], q[1]))} |")

    L += ["", "## Kernels", "", "GEMM at the step's shapes, batch 128 and 2048 (GFLOP/s): our kernel (Eigen split over the pool) and Eigen called directly (one thread).", "",
          "| product | batch | ours | Eigen direct |", "| --- | ---: | ---: | ---: |"]
    for b in [128, 2048]:
        for g in FLOOR_SETS["trainable"]:
            o, e = kern.get(f"BM_Gemm/cpu/{g}/{b}"), kern.get(f"BM_Gemm/eigen/{g}/{b}")
            L.append(f"| {g} | {b} | {fmt(o[1].get('GFLOP/s') if o else None)} | {fmt(e[1].get('GFLOP/s') if e else None)} |")
    L += ["", "Memory-bound kernels over 4M floats (GB/s; `copy` is the ceiling):", "", "| kernel | GB/s |", "| --- | ---: |"]
    for name, (ms, row) in sorted(kern.items()):
        if name.startswith("BM_Stream/cpu/"):
            L.append(f"| {name.split('/')[2]} | {fmt(row.get('bytes_per_second', 0) / 1e9)} |")

    series_ratio = {
        "ours frozen/trainable": [(b, ratio(t(ours, "default", "frozen", b), t(ours, "default", "trainable", b))) for b in BATCHES],
        "LibTorch frozen/trainable": [(b, ratio(t(torch, "default", "frozen", b), t(torch, "default", "trainable", b))) for b in BATCHES],
        "ours frozen/fwd-only": [(b, ratio(t(ours, "default", "frozen", b), t(ours, "default", "forward_only", b))) for b in BATCHES],
    }
    svg_lines(f"{a.plots}/bench_frozen_ratio.svg", "Frozen step cost relative to trainable", series_ratio, "ratio", ref=1.0)
    series_time = {f"{who} {m}": [(b, t(rows, "default", m, b)) for b in BATCHES]
                   for who, rows in [("ours", ours), ("LibTorch", torch)] for m in ["trainable", "frozen"]}
    svg_lines(f"{a.plots}/bench_vs_libtorch.svg", "Default model: ms per step", series_time, "ms", log_y=True)
    L += ["", "## Plots", "", "![frozen/trainable](bench_frozen_ratio.svg)", "", "![ours vs LibTorch](bench_vs_libtorch.svg)", ""]
    log = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optimization_log.md")
    if os.path.exists(log):
        with open(log) as f:
            L += ["", f.read()]
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
