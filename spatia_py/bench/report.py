"""Presentation of benchmark results: the printed table, ``results.json`` and the PNG plots.

A scenario returns a dict with (at least) ``rows`` and ``curves``:

- ``rows``: list of :func:`row` dicts — one measure of ours against one peer, with the
  comparison already computed (``ratio = peer / spatia``, or ``delta = spatia - peer`` for
  quantities like dB where a difference reads better).
- ``curves``: ``{name: {"title", "xlabel", "ylabel", "series": {label: {"x": [...], "y": [...]}},
  "logx", "logy", "vlines": {"x": [...], "label": str}}}`` — one PNG each (``y`` may hold None
  for a missing point; ``vlines`` are optional markers such as lap starts).

Everything here is pure formatting of a results dict; nothing is measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["row", "format_table", "format_value", "json_safe", "write_results_json", "write_plots",
           "RATIO_LEGEND"]

RATIO_LEGEND = ("ratio (xN) = peer / spatia: for times and errors, > 1 means spatia is faster / more accurate; "
                "delta (+N) = spatia - peer")


def row(measure: str, unit: str, ours: float | None, peer_name: str | None = None, peer: float | None = None,
        compare: str | None = "ratio", note: str = "") -> dict:
    """One line of the table. ``compare``: ``"ratio"`` (peer / ours), ``"delta"`` (ours - peer) or None."""
    if compare not in ("ratio", "delta", None):
        raise ValueError(f"row: compare must be 'ratio', 'delta' or None, got {compare!r}")
    ours_f, peer_f = _num(ours), _num(peer)
    out: dict[str, Any] = {"measure": measure, "unit": unit, "ours": ours_f, "peer_name": peer_name,
                           "peer": peer_f, "compare": compare if peer_name else None, "note": note}
    if peer_name and ours_f is not None and peer_f is not None:
        if compare == "ratio" and ours_f != 0 and math.isfinite(ours_f) and math.isfinite(peer_f):
            out["ratio"] = peer_f / ours_f
        elif compare == "delta" and math.isfinite(ours_f) and math.isfinite(peer_f):
            out["delta"] = ours_f - peer_f
    return out


def _num(x: Any) -> float | None:
    if x is None:
        return None
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def format_value(x: float | None, digits: int = 4) -> str:
    """Short human form: 4 significant digits, thousands separators for large values, ``-`` for none."""
    if x is None:
        return "-"
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    ax = abs(x)
    if ax >= 10 ** digits:
        return f"{x:,.0f}"
    if ax == 0:
        return "0"
    if ax < 1e-4:
        return f"{x:.{digits - 1}e}"
    decimals = max(digits - 1 - int(math.floor(math.log10(ax))), 0)
    return f"{x:.{decimals}f}"


def _comparison(r: dict) -> str:
    if r.get("ratio") is not None:
        return f"x{format_value(r['ratio'], 3)}"
    if r.get("delta") is not None:
        d = r["delta"]
        return f"{'+' if d >= 0 else ''}{format_value(d, 3)}"
    return "-" if r.get("peer_name") else ""


def format_table(results: dict) -> str:
    """The plain-text, column-aligned table of all scenarios' rows (what ``spatia bench`` prints)."""
    header = ("scenario", "measure", "unit", "spatia", "peer", "peer value", "vs peer", "note")
    lines: list[tuple[str, ...]] = []
    for name, sc in results.get("scenarios", {}).items():
        if sc.get("error"):
            lines.append((name, "ERROR", "", "", "", "", "", sc["error"].splitlines()[-1][:100]))
            continue
        for r in sc.get("rows", []):
            lines.append((name, r["measure"], r.get("unit", ""), format_value(r.get("ours")),
                          r.get("peer_name") or "", format_value(r.get("peer")) if r.get("peer_name") else "",
                          _comparison(r), r.get("note", "")))
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    numeric = {3, 5, 6}

    def fmt(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(parts).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths).rstrip()]
    previous = None
    for line in lines:
        if previous is not None and line[0] != previous:
            out.append("")
        out.append(fmt(line))
        previous = line[0]
    out += ["", RATIO_LEGEND]
    for name, sc in results.get("scenarios", {}).items():
        for note in sc.get("notes") or []:
            out.append(f"{name}: {note}")
    machine = results.get("machine") or {}
    if machine:
        v = machine.get("versions", {})
        git = machine.get("git") or {}
        commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
        out.append(f"machine: {machine.get('cpu_model')} | {machine.get('cpu_cores_usable')} cores | "
                   f"{machine.get('ram_gib')} GiB | torch {v.get('torch')} ({machine.get('torch_threads')} threads) "
                   f"| open3d {v.get('open3d')} | pycolmap {v.get('pycolmap')} | commit {commit} | "
                   f"load {machine.get('load_average_1m')}")
    return "\n".join(out)


def json_safe(o: Any) -> Any:
    """Plain JSON types: numpy scalars/arrays converted, NaN -> null, +-inf -> "inf"/"-inf", paths as strings."""
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_safe(o.tolist())
    if isinstance(o, np.generic):
        return json_safe(o.item())
    if isinstance(o, float):
        if math.isnan(o):
            return None
        if math.isinf(o):
            return "inf" if o > 0 else "-inf"
        return o
    if isinstance(o, Path):
        return str(o)
    return o


def write_results_json(results: dict, out_dir: Path) -> Path:
    """Write ``out_dir/results.json`` (written to a temporary name, then renamed)."""
    path = Path(out_dir) / "results.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(results), indent=1, allow_nan=False))
    tmp.replace(path)
    return path


def write_plots(results: dict, out_dir: Path) -> list[Path]:
    """One PNG per curve of every scenario (``out_dir/<scenario>_<curve>.png``); returns the files."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    files = []
    for name, sc in results.get("scenarios", {}).items():
        for curve_name, c in (sc.get("curves") or {}).items():
            fig = Figure(figsize=(6.4, 4.0), dpi=110)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            drawn = 0
            for label, s in c["series"].items():
                x = [v for v, y in zip(s["x"], s["y"], strict=True) if y is not None]
                y = [y for y in s["y"] if y is not None]
                if not x:
                    continue
                ax.plot(x, y, marker="o" if len(x) <= 40 else None, markersize=3, label=label)
                drawn += 1
            for k, x in enumerate(c.get("vlines", {}).get("x", [])):
                ax.axvline(x, color="grey", linestyle=":", linewidth=1,
                           label=c["vlines"].get("label") if k == 0 else None)
            if c.get("logx"):
                ax.set_xscale("log")
            if c.get("logy"):
                ax.set_yscale("log")
            ax.set_title(c.get("title", f"{name}: {curve_name}"), fontsize=10)
            ax.set_xlabel(c.get("xlabel", ""))
            ax.set_ylabel(c.get("ylabel", ""))
            ax.grid(True, alpha=0.3)
            if drawn > 1 or c.get("vlines"):
                ax.legend(fontsize=8)
            fig.tight_layout()
            path = Path(out_dir) / f"{name}_{curve_name}.png"
            fig.savefig(path)
            files.append(path)
    return files
