"""The report's figures, drawn with matplotlib from what the passes and targets record.

Each function takes plain data (the dicts saved in ``meta.json``: pass stats, the
target's design) and returns a PNG as bytes, or ``None`` when there is nothing to draw,
so the page shows only plots backed by measurements.  The Agg backend is used (no
display needed).  Where each number comes from:

* `size_per_stage` -- ``size_after`` in every pass's stats (`compiler.stage_size`), the
  original model's size and, when saved compressed, weights.bin's bytes.
* `search_tradeoff` -- ``prune-search``'s ``probe_costs`` (accuracy, parameters and MACs
  of every probe; latency too with ``objective=latency``), ``mixed-precision``'s
  ``trials`` (score and weight bits of every assignment it evaluated).
* `sensitivity_curves` -- ``t-sensitive``'s ``sensitivity`` (accuracy drop per pruning
  ratio, each layer group pruned alone); ``mixed-precision``'s per-layer sensitivity.
* `kernel_latency` -- `CompiledModel.profile` rows.
* `fpga_resources` -- fpga-sim's design (``layers``: LUT, BRAM18, DSP, cycles; SIMULATED).
"""
from __future__ import annotations

import io
from typing import Sequence

__all__ = ["size_per_stage", "search_tradeoff", "sensitivity_curves", "mixed_precision_bits",
           "kernel_latency", "fpga_resources"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    if not getattr(fig, "_laid_out", False):
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def _short(name: str, limit: int = 40) -> str:
    """Axis labels only (the table has full names): keep the informative end."""
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def size_per_stage(stages: Sequence[tuple[str, dict]]) -> bytes | None:
    """Bars of weight bytes (at their real bit widths) and nonzero parameters per stage;
    ``stages`` is ``[(label, {"weight_bytes", "nonzero_params", "params"}), ...]``."""
    stages = [(label, s) for label, s in stages if s and "weight_bytes" in s]
    if len(stages) < 2:
        return None
    plt = _plt()
    labels = [label for label, _ in stages]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(stages) + 2), 3.6))
    x = range(len(stages))
    kib = [s["weight_bytes"] / 1024 for _, s in stages]
    bars = ax.bar(x, kib, color="#4c72b0", label="weight bytes (KiB, at real bit widths)")
    for bar, value in zip(bars, kib):
        ax.annotate(f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, value),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("KiB")
    ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
    if any("nonzero_params" in s for _, s in stages):
        ax2 = ax.twinx()
        ax2.plot(list(x), [s.get("nonzero_params", s.get("params", 0)) for _, s in stages],
                 "o-", color="#dd8452", label="nonzero parameters")
        ax2.set_ylabel("nonzero parameters")
        ax2.set_ylim(bottom=0)
    ax.set_ylim(top=max(kib) * 1.15)  # room for the value labels
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)  # below: no overlap
    ax.set_title("Size after each stage")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig._laid_out = True
    return _png(fig)


def search_tradeoff(name: str, stats: dict) -> bytes | None:
    """Accuracy against size (and latency when measured) for every probe of a search."""
    if name.split("#")[0] == "prune-search" and stats.get("probe_costs"):
        costs = stats["probe_costs"]
        start = stats.get("start") or {}
        panels = [("params", "parameters kept (fraction)"), ("macs", "MACs kept (fraction)")]
        if any("latency_ms" in c for c in costs):
            panels.append(("latency_ms", "latency (ms, target of the pass)"))
        plt = _plt()
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
        for ax, (key, label) in zip(axes[0], panels):
            pts = [c for c in costs if key in c]
            denom = start.get(key) if key != "latency_ms" else None
            xs = [c[key] / denom if denom else c[key] for c in pts]
            ok = [c.get("ok", False) for c in pts]
            ax.scatter([x for x, o in zip(xs, ok) if o], [c["accuracy"] for c, o in zip(pts, ok) if o],
                       color="#55a868", label="within budget", zorder=3)
            ax.scatter([x for x, o in zip(xs, ok) if not o],
                       [c["accuracy"] for c, o in zip(pts, ok) if not o],
                       color="#c44e52", marker="x", label="over budget", zorder=3)
            for x, c in zip(xs, pts):
                ax.annotate(f"{c['rate']:.2f}", (x, c["accuracy"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
            if "baseline" in stats:
                ax.axhline(stats["baseline"], color="gray", lw=0.8, ls="--", label="baseline")
            ax.set_xlabel(label)
            ax.set_ylabel("accuracy")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{name}: accuracy vs compression (labels: pruning rate)", fontsize=10)
        return _png(fig)
    if name.split("#")[0] == "mixed-precision" and stats.get("trials"):
        trials = stats["trials"]
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
        ax.scatter([t[3] / 8 / 1024 for t in trials], [t[2] for t in trials], s=14,
                   color="#4c72b0", label="evaluated assignment")
        if "base_score" in stats:
            ax.axhline(stats["base_score"], color="gray", lw=0.8, ls="--",
                       label="all at top width")
        ax.set_xlabel("multiply-layer weights (KiB at their bit widths)")
        ax.set_ylabel("score")
        ax.legend(fontsize=7)
        ax.set_title(f"{name}: score vs weight size", fontsize=10)
        return _png(fig)
    return None


def sensitivity_curves(name: str, stats: dict) -> bytes | None:
    """t-sensitive: accuracy drop against pruning ratio, one line per layer group."""
    table = stats.get("sensitivity")
    if not isinstance(table, dict) or not table:
        return None
    if not all(isinstance(rows, list) for rows in table.values()):
        return None  # mixed-precision's per-layer scalars: see mixed_precision_bits
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for layer, rows in table.items():
        if rows:
            ax.plot([r for r, _ in rows], [100 * d for _, d in rows], "o-", ms=3,
                    label=_short(layer, 32))
    if "threshold" in stats:
        ax.axhline(100 * float(stats["threshold"]), color="gray", ls="--", lw=0.8,
                   label="threshold")
    ax.set_xlabel("pruning ratio of the group alone")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title(f"{name}: sensitivity per layer group", fontsize=10)
    if len(table) <= 16:
        ax.legend(fontsize=6, ncol=2)
    return _png(fig)


def mixed_precision_bits(name: str, stats: dict) -> bytes | None:
    """mixed-precision: per-layer sensitivity (score lost at the lowest width) and the
    bits chosen."""
    bits = stats.get("bits_per_layer")
    if not isinstance(bits, dict) or not bits:
        return None
    sens = stats.get("sensitivity") or {}
    layers = list(bits)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(layers) + 2), 3.6))
    ax.bar(range(len(layers)), [bits[n] for n in layers], color="#4c72b0", label="bits chosen")
    ax.set_ylabel("bits")
    ax.set_xticks(range(len(layers)), [_short(n, 24) for n in layers], rotation=60, ha="right",
                  fontsize=6)
    if sens:
        ax2 = ax.twinx()
        ax2.plot(range(len(layers)), [100 * float(sens.get(n, 0.0)) for n in layers], "o",
                 color="#c44e52", label="sensitivity (points lost at lowest width)")
        ax2.set_ylabel("points")
        ax2.legend(loc="upper right", fontsize=7)
    ax.legend(loc="upper left", fontsize=7)
    ax.set_title(f"{name}: bits per layer", fontsize=10)
    return _png(fig)


def kernel_latency(rows: Sequence[dict], top: int = 20) -> bytes | None:
    """Horizontal bars of the slowest kernels (ms per run) from `CompiledModel.profile`."""
    rows = [r for r in rows if r.get("ms") is not None][:top]
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.28 * len(rows) + 1.2))
    ax.barh(range(len(rows)), [r["ms"] for r in rows], color="#8172b3")
    ax.set_yticks(range(len(rows)), [_short(str(r["kernel"]), 48) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("ms per run")
    ax.set_title("Latency per kernel (slowest first)", fontsize=10)
    return _png(fig)


def fpga_resources(design: dict) -> bytes | None:
    """fpga-sim: LUT, BRAM18, DSP and cycles per hardware stage (SIMULATED estimates)."""
    layers = [l for l in (design or {}).get("layers", []) if isinstance(l, dict)]
    if not layers:
        return None
    plt = _plt()
    keys = [k for k in ("LUT", "BRAM18", "DSP", "cycles") if any(l.get(k) for l in layers)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.0 * len(keys) + 1.5, 0.3 * len(layers) + 1.6),
                             sharey=True, squeeze=False)
    names = [_short(str(l.get("node", "?")), 28) for l in layers]
    for ax, key in zip(axes[0], keys):
        ax.barh(range(len(layers)), [float(l.get(key) or 0) for l in layers], color="#64b5cd")
        ax.set_title(key, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_yticks(range(len(layers)), names, fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle("FPGA resources per stage (fpga-sim, SIMULATED estimates)", fontsize=10)
    return _png(fig)
