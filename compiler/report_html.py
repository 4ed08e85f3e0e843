"""``compiler report DIR --html page.html``: one self-contained page a person reads.

Everything is inline (CSS, PNG figures as base64 ``data:`` URIs), so the file can be
mailed or attached to a CI run and opened anywhere.  Sections, each shown only when its
data exists: the summary (the text report's totals), the figures of `compiler.plots`,
the per-layer table (params, MACs, bits, sparsity, planned arena offset and size from
`compiler.memory_plan`), per-kernel latency (when profiled), the target's own section
(fpga-sim's design) and the pass history with every pass's stats.
"""
from __future__ import annotations

import base64
import html
import json
from typing import Any, Sequence

from . import plots
from .artifact import format_bytes, format_count
from .stage_size import STATS_KEY

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1200px}
h1{font-size:1.5em;margin-bottom:0} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px
solid #ddd;padding-bottom:3px} .sub{color:#666;margin-top:2px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td.l,th.l{text-align:left;white-space:normal;word-break:break-all}
tr:nth-child(even) td{background:#fafafa} img{max-width:100%;margin:6px 0;border:1px solid #eee}
pre{background:#f7f7f7;padding:8px;font-size:12px;overflow-x:auto} .note{color:#a33}
details{margin:4px 0} summary{cursor:pointer}
"""


def _e(text: Any) -> str:
    return html.escape(str(text))


def _count(n: Any) -> str:
    return format_count(n) if isinstance(n, (int, float)) else _e(n)


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: Sequence[int] = (0,),
           cls: str = "") -> str:
    head = "".join(f'<th class="{"l" if i in left else ""}">{_e(h)}</th>'
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i in left else ""}">{_e(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _memory_plan(graph) -> tuple[dict[str, tuple[int, int]], dict | None]:
    """Per value: (arena offset, bytes) of its buffer, and the plan's totals."""
    from .memory_plan import plan_memory

    try:
        plan = plan_memory(graph)
    except Exception as exc:  # a graph the planner refuses: the page says why
        return {}, {"error": f"{type(exc).__name__}: {exc}"}
    where = {}
    for r in plan.records:
        for name in r.values:
            where[name] = (plan.offsets[r.name], r.size)
    return where, {"arena_bytes": plan.arena_bytes, "lower_bound": plan.lower_bound,
                   "strategy": plan.strategy}


def _stages(report: dict) -> list[tuple[str, dict]]:
    """(label, size) for the original model, each pass that recorded its size, and the
    compressed archive."""
    out = []
    original = report.get("original")
    if original:
        out.append(("original", {"params": original["params"],
                                 "weight_bytes": original["param_bytes"]}))
    for name, stats in (report.get("pass_stats") or {}).items():
        if isinstance(stats, dict) and isinstance(stats.get(STATS_KEY), dict):
            out.append((name, stats[STATS_KEY]))
    comp = report.get("compression")
    if comp and comp.get("bytes"):
        last = dict(out[-1][1]) if out else {}
        last["weight_bytes"] = comp["bytes"]
        out.append(("weights.bin (coded)", last))
    return out


def _pass_history(pass_stats: dict) -> str:
    parts = []
    for name, stats in pass_stats.items():
        if not isinstance(stats, dict):
            stats = {"value": stats}
        scalars = [(k, v) for k, v in stats.items()
                   if isinstance(v, (int, float, str, bool)) or v is None]
        size = stats.get(STATS_KEY)
        line = ", ".join(f"{k}={v}" for k, v in scalars[:10]) or "(no scalar stats)"
        if isinstance(size, dict):
            line += (f"; after: {_count(size.get('params'))} params, "
                     f"{format_bytes(int(size.get('weight_bytes', 0)))} weights, "
                     f"{_count(size.get('macs'))} MACs")
        full = json.dumps(stats, indent=1, default=str)
        parts.append(f'<details class="pass"><summary><b>{_e(name)}</b>: {_e(line)}</summary>'
                     f"<pre>{_e(full)}</pre></details>")
    return "\n".join(parts) or "<p>(no passes)</p>"


def render_html(cm, *, profile: Sequence[dict] | None = None, title: str = "") -> str:
    """The page for a `CompiledModel` (from `CompiledModel.load` or `compile`).
    ``profile``: `CompiledModel.profile` rows, for the per-kernel latency section."""
    rep = cm.report()
    report = rep.to_dict()
    stats = report["stats"]
    original = report.get("original")
    sections: list[str] = []

    # summary: the text report's totals
    rows = []
    for label, key, fmt in [("parameters", "params", _count), ("weights size", "param_bytes", format_bytes),
                            ("MACs", "macs", _count),
                            ("peak activations", "peak_activation_bytes", format_bytes),
                            ("nodes", "nodes", _count)]:
        new = stats[key]
        row = [label, fmt(new)]
        if original:
            old = original[key]
            row += [fmt(old), f"{old / new:.2f}x" if new else "-"]
        rows.append(row)
    header = ["", "compiled"] + (["original", "ratio"] if original else [])
    summary = _table(header, rows)
    lat = report.get("latency")
    if lat:
        kind = ("SIMULATED" if lat.get("simulated") else "EMULATED" if lat.get("emulated")
                else "measured")
        summary += f"<p>latency ({_e(kind)}): median {1e3 * lat['median_s']:.3f} ms on {_e(lat['device'])}</p>"
    if report.get("tuning"):
        t = report["tuning"]
        summary += (f"<p>tuning: {_e(t.get('trials', 0))} trials, {_e(t.get('tasks_with_records', 0))}"
                    f"/{_e(t.get('tasks', 0))} tasks tuned</p>")
    sections.append(f"<h2>Summary</h2>{summary}")

    # figures
    figures = [_img(plots.size_per_stage(_stages(report)), "size per stage")]
    for name, pstats in (report.get("pass_stats") or {}).items():
        if not isinstance(pstats, dict):
            continue
        figures.append(_img(plots.search_tradeoff(name, pstats), f"{name} trade-off"))
        figures.append(_img(plots.sensitivity_curves(name, pstats), f"{name} sensitivity"))
        if name.split("#")[0] == "mixed-precision":
            figures.append(_img(plots.mixed_precision_bits(name, pstats), f"{name} bits"))
    if profile:
        figures.append(_img(plots.kernel_latency(profile), "latency per kernel"))
    target_data = report.get("target_report")
    if isinstance(target_data, dict):
        figures.append(_img(plots.fpga_resources(target_data), "FPGA resources per layer"))
    figures = [f for f in figures if f]
    if figures:
        sections.append("<h2>Plots</h2>" + "\n".join(figures))

    # per-layer table
    where, plan = _memory_plan(cm.graph)
    outputs = {n.name: n.outputs[0].name for n in cm.graph.topo_order() if n.outputs}
    layer_rows = []
    for l in stats["layers"]:
        offset, size = where.get(outputs.get(l["name"], ""), (None, None))
        bits = l.get("bits") or ("float" if l["params"] else "-")
        layer_rows.append([l["name"], l["op_type"], "x".join(str(d) for d in l["output_shape"]),
                           _count(l["params"]), _count(l["macs"]), bits,
                           f"{100 * l.get('sparsity', 0):.1f}%" if l["params"] else "-",
                           "-" if offset is None else offset,
                           "-" if size is None else format_bytes(size)])
    plan_note = ""
    if plan and "error" in plan:
        plan_note = f'<p class="note">memory plan: {_e(plan["error"])}</p>'
    elif plan:
        plan_note = (f"<p>planned arena ({_e(plan['strategy'])}): {format_bytes(plan['arena_bytes'])}"
                     f" (lower bound {format_bytes(plan['lower_bound'])})</p>")
    sections.append("<h2>Layers</h2>" + plan_note + _table(
        ["layer", "op", "output", "params", "MACs", "bits", "sparsity", "arena offset",
         "buffer"], layer_rows, left=(0, 1), cls="layers"))

    if profile:
        sections.append("<h2>Latency per kernel</h2>" + _table(
            ["kernel", "ms", "calls", "share"],
            [[r["kernel"], f"{r['ms']:.4f}", r.get("calls", ""),
              f"{100 * r.get('share', 0):.1f}%"] for r in profile]))

    if rep.extra:
        sections.append(f"<h2>{_e(rep.extra['title'])}</h2><pre>{_e(rep.extra['text'])}</pre>")

    sections.append("<h2>Pass history</h2>" + _pass_history(report.get("pass_stats") or {}))

    head = (f"<h1>{_e(title or 'compiled model')}</h1><p class='sub'>target "
            f"<b>{_e(report['target'])}</b> · passes <code>{_e(report['pipeline'] or '(none)')}"
            "</code></p>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{_e(title or 'report')}</title><style>{_CSS}</style></head><body>"
            + head + "\n".join(sections) + "</body></html>")
