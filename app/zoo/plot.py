"""The zoo at a glance: kNN top-1 against int8 latency, one point per published model, as a PNG.

Reads rows as mappings (the zoo table's `CatalogRow.to_json()`, see ``app.zoo.table``); torch-free, and
matplotlib is imported only when a plot is drawn, so ``pareto_front`` works on an edge install. The plot is drawn on a Figure with its own
Agg canvas (as ``zoo.card.plot_training_curve`` does): no pyplot state, the caller's backend is never switched.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from zoo.errors import missing_dependency
from zoo.fsutil import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Row = Mapping[str, Any]

FIGSIZE = (7.5, 4.5)  # inches, at DPI: a 750 x 450 PNG
DPI = 100
LOG_X_SPAN = 4.0  # a log latency axis once the slowest model is more than this many times the fastest
MAX_AREA = 500.0  # marker area (pt^2) of the largest int8 file; the others in proportion
MIN_AREA = 6.0  # ... but never smaller than this, so a tiny model stays visible
UNKNOWN_AREA = 30.0  # a model whose int8 size is unknown (drawn as a square)
POINT, FRONT, RANDOM = "tab:blue", "tab:red", "tab:gray"


def _number(value: Any) -> float | None:
    """`value` as a finite float, or None when it is missing or not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def pareto_front(rows: Sequence[Row], x: str = "int8_b1_ms", y: str = "knn_top1") -> list[int]:
    """Indices of the rows on the Pareto front of low `x` and high `y`, sorted by x (ties: higher y first).

    The front is the set of models worth picking: every other model is matched or beaten on both latency and
    accuracy by one of them. A row is on it when no other row is at least as good on both and strictly better
    on one (so exact duplicates are both on it). Rows whose x or y is missing (None, not a finite number) are
    ignored.
    """
    points = [(i, px, py) for i, row in enumerate(rows)
              if (px := _number(row.get(x))) is not None and (py := _number(row.get(y))) is not None]
    front = [(i, px, py) for i, px, py in points
             if not any(qx <= px and qy >= py and (qx < px or qy > py) for _, qx, qy in points)]
    return [i for i, _, _ in sorted(front, key=lambda p: (p[1], -p[2], p[0]))]


def _label(row: Row, index: int) -> str:
    return str(row.get("name") or row.get("repo_id") or f"row {index}")


def _plottable(rows: Sequence[Row]) -> list[int]:
    """Indices of the rows with a positive int8 latency and a kNN top-1; the others are logged and skipped."""
    keep = []
    for i, row in enumerate(rows):
        ms, acc = _number(row.get("int8_b1_ms")), _number(row.get("knn_top1"))
        missing = [what for what, ok in (("int8 latency (int8_b1_ms)", ms is not None and ms > 0),
                                         ("kNN top-1 (knn_top1)", acc is not None)) if not ok]
        if missing:
            log.warning("zoo plot: skipping %s, no %s", _label(row, i), " and no ".join(missing))
        else:
            keep.append(i)
    return keep


def _zoo_figure(rows: Sequence[Row], title: str) -> Figure:
    """The zoo plot as a Figure with its own Agg canvas (what `plot_zoo` saves)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import FuncFormatter
    except ModuleNotFoundError as exc:
        raise (missing_dependency(exc) or exc) from exc

    keep = _plottable(rows)
    if not keep:
        raise ValueError(f"nothing to plot: none of the {len(rows)} zoo rows has both an int8 latency "
                         "(int8_b1_ms > 0) and a kNN top-1 (knn_top1)")
    shown = [rows[i] for i in keep]
    xs = [float(r["int8_b1_ms"]) for r in shown]
    ys = [100 * float(r["knn_top1"]) for r in shown]
    sizes = [mb if (mb := _number(r.get("int8_mb"))) is not None and mb > 0 else None for r in shown]

    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # drawn with Agg whatever backend the caller uses; no pyplot state, nothing switched
    ax = fig.add_subplot()
    if max(xs) > LOG_X_SPAN * min(xs):
        ax.set_xscale("log")  # plain numbers (0.5, 1, 2, 5, 10 ms), not 10^k
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))

    # Learned vs random init: a thin line down to a hollow marker at the random-init kNN of each model.
    randoms = [(x, 100 * r0, y) for x, y, row in zip(xs, ys, shown)
               if (r0 := _number(row.get("random_init_knn_top1"))) is not None]
    if randoms:
        rx, ry, ty = zip(*randoms)
        ax.vlines(rx, ry, ty, colors=RANDOM, linewidths=0.8, zorder=1)
        ax.scatter(rx, ry, s=22, facecolors="none", edgecolors=RANDOM, linewidths=1.0, zorder=2,
                   label="random-init kNN")

    largest = max((mb for mb in sizes if mb is not None), default=None)
    area = [UNKNOWN_AREA if mb is None or largest is None else max(MIN_AREA, MAX_AREA * mb / largest)
            for mb in sizes]
    known = [i for i, mb in enumerate(sizes) if mb is not None]
    unknown = [i for i, mb in enumerate(sizes) if mb is None]
    if known:
        ax.scatter([xs[i] for i in known], [ys[i] for i in known], s=[area[i] for i in known], color=POINT,
                   alpha=0.6, edgecolors="white", linewidths=0.5, zorder=3)
    if unknown:
        ax.scatter([xs[i] for i in unknown], [ys[i] for i in unknown], s=UNKNOWN_AREA, marker="s", color=POINT,
                   alpha=0.6, zorder=3, label="int8 size unknown")

    front = pareto_front([{"x": x, "y": y} for x, y in zip(xs, ys)], x="x", y="y")
    fx, fy = [xs[i] for i in front], [ys[i] for i in front]
    ax.step(fx, fy, where="post", color=FRONT, linewidth=1.2, zorder=4, label="Pareto front")
    ax.scatter(fx, fy, s=[area[i] for i in front], facecolors="none", edgecolors=FRONT, linewidths=1.6, zorder=5)

    for x, y, a, row, i in zip(xs, ys, area, shown, keep):
        off = 0.75 * math.sqrt(a) / 2 + 2  # just off the marker's edge (its radius is sqrt(area) / 2 points)
        ax.annotate(_label(row, i), (x, y), xytext=(off, off), textcoords="offset points", fontsize=7, zorder=6)

    ax.set_xlabel("int8 latency, batch 1 (ms, onnxruntime)")
    ax.set_ylabel("kNN top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both" if ax.get_xscale() == "log" else "major")
    ax.margins(x=0.08, y=0.1)
    # Legends outside the axes, on the right (constrained layout makes room for figure legends placed "outside").
    fig.legend(loc="outside right upper", fontsize=7, frameon=False)
    if largest is not None:  # the size key: reference markers at the largest file and at 1/4 and 1/16 of it
        refs = sorted({largest, largest / 4, largest / 16})
        handles = [Line2D([], [], linestyle="", marker="o", color=POINT, alpha=0.6,
                          markersize=math.sqrt(max(MIN_AREA, MAX_AREA * mb / largest)))  # markersize^2 = area
                   for mb in refs]
        fig.legend(handles, [f"{mb:.3g} MB" for mb in refs], title="marker area =\nint8 file size",
                   title_fontsize=7, fontsize=7, loc="outside right lower", frameon=False, labelspacing=1.3,
                   borderpad=0.8)
    return fig


def plot_zoo(rows: Sequence[Row], path: Path, title: str = "edgezoo zoo") -> Path:
    """kNN top-1 (%) against int8 latency at batch 1, one labelled point per model, as a PNG at `path`.

    Marker area is proportional to the int8 ONNX file size; the Pareto front (`pareto_front`) is drawn as a
    step line through its highlighted points; each model's random-init kNN is a hollow marker joined to it by a
    thin line. The latency axis is logarithmic when it spans more than LOG_X_SPAN times. Rows without a latency
    or an accuracy are skipped with a warning; ValueError when none is left. Written atomically.
    """
    fig = _zoo_figure(rows, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    log.info("zoo plot: %s", path)
    return path
