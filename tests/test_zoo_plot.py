"""app.zoo.plot: the Pareto front of the zoo table's rows, and the accuracy-vs-latency PNG drawn from them."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from app.zoo.plot import pareto_front, plot_zoo

ROOT = Path(__file__).resolve().parents[1]


def _row(name: str, ms: float | None, acc: float | None, rand: float | None = 0.25, mb: float | None = 5.0) -> dict:
    return {"name": name, "repo_id": f"edgezoo/{name}", "knn_top1": acc, "random_init_knn_top1": rand,
            "int8_b1_ms": ms, "int8_mb": mb, "fp32_mb": None if mb is None else 4 * mb, "params_m": 1.0}


ZOO = [_row("tiny", 0.6, 0.50, mb=0.4), _row("mobile", 1.2, 0.61, mb=3.1), _row("resnet", 4.1, 0.72, mb=11.2),
       _row("vit", 6.0, 0.66, rand=None), _row("effnet", 9.0, 0.75, mb=None)]


def test_pareto_front_keeps_the_undominated_rows_sorted_by_latency():
    rows = [_row("a", 1.0, 0.50),
            _row("b", 2.0, 0.70),
            _row("slower-and-worse", 3.0, 0.60),   # dominated by b on both
            _row("b-twin", 2.0, 0.70),             # an exact tie with b: neither dominates the other
            _row("same-ms-worse", 2.0, 0.65),      # as fast as b, less accurate: dominated
            _row("no-latency", None, 0.99),        # would top the front; ignored
            _row("best", 5.0, 0.90),
            _row("same-acc-slower", 6.0, 0.90),    # as accurate as best, slower: dominated
            _row("no-accuracy", 0.5, None),        # would be the fastest; ignored
            _row("nan", float("nan"), 0.95)]       # not a number: ignored like None
    assert pareto_front(rows) == [0, 1, 3, 6]
    # Another pair of columns; equal x is ordered by the higher y first.
    rows = [{"ms": 2, "acc": 0.2}, {"ms": 1, "acc": 0.1}, {"ms": 2, "acc": 0.3}]
    assert pareto_front(rows, x="ms", y="acc") == [1, 2]
    assert pareto_front([]) == [] and pareto_front([_row("x", None, None)]) == []


def _pixels(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (750, 450)
        return np.asarray(img.convert("RGB"), np.int16)


def test_plot_zoo_draws_the_rows_and_leaves_the_backend_alone(tmp_path):
    """The PNG follows the rows (one accuracy changed moves pixels), draws the front in tab:red, and drawing it
    neither switches the caller's matplotlib backend nor leaves a temp file behind."""
    import matplotlib
    import numpy as np

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # the caller's own backend
    try:
        out = plot_zoo(ZOO, tmp_path / "plots" / "zoo.png")
        moved = [dict(r) for r in ZOO]
        moved[1]["knn_top1"] = 0.55
        other = plot_zoo(moved, tmp_path / "plots" / "moved.png", title="moved")
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
    assert out == tmp_path / "plots" / "zoo.png"
    assert sorted(p.name for p in out.parent.iterdir()) == ["moved.png", "zoo.png"]  # written atomically
    first, second = _pixels(out), _pixels(other)
    red = np.abs(first - (214, 39, 40)).sum(axis=2) < 60
    blue = np.abs(first - (120, 173, 210)).sum(axis=2) < 40  # the markers: tab:blue at alpha 0.6 on white
    assert red.sum() > 300 and blue.sum() > 300
    assert (np.abs(first - second).sum(axis=2) > 30).sum() > 300


def test_plot_zoo_figure_axes_labels_and_random_init(tmp_path):
    """Log latency axis only past a 4x span; every plotted model labelled; one line per random-init kNN."""
    from matplotlib.collections import LineCollection

    from app.zoo.plot import _zoo_figure

    ax = _zoo_figure(ZOO, "zoo").axes[0]
    assert ax.get_xscale() == "log"
    assert sorted(t.get_text() for t in ax.texts) == sorted(r["name"] for r in ZOO)
    vlines = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert len(vlines) == 1 and len(vlines[0].get_segments()) == sum(r["random_init_knn_top1"] is not None for r in ZOO)
    assert "marker area" in " ".join(t.get_text() for legend in ax.figure.legends for t in legend.get_texts()
                                     + [legend.get_title()])
    near = [_row("a", 2.0, 0.5), _row("b", 7.9, 0.6, rand=None, mb=None)]
    ax = _zoo_figure(near, "zoo").axes[0]
    assert ax.get_xscale() == "linear"
    assert [len(c.get_segments()) for c in ax.collections if isinstance(c, LineCollection)] == [1]


def test_rows_without_latency_or_accuracy_are_skipped_and_none_left_is_an_error(tmp_path, caplog):
    rows = [*ZOO, _row("unmeasured", None, 0.7), _row("unevaluated", 1.0, None)]
    with caplog.at_level(logging.WARNING, logger="app.zoo.plot"):
        assert plot_zoo(rows, tmp_path / "zoo.png").is_file()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "unmeasured" in warned and "unevaluated" in warned and "resnet" not in warned
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_zoo(rows[-2:], tmp_path / "none.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_zoo([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["zoo.png"]


def test_module_imports_and_computes_the_front_without_matplotlib():
    code = """
import sys
sys.modules["matplotlib"] = None  # any `import matplotlib` now fails
from zoo.errors import MissingDependencyError
from app.zoo.plot import pareto_front, plot_zoo
assert pareto_front([{"int8_b1_ms": 1.0, "knn_top1": 0.5}, {"int8_b1_ms": 2.0, "knn_top1": 0.4}]) == [0]
try:
    plot_zoo([{"int8_b1_ms": 1.0, "knn_top1": 0.5}], "never.png")
except MissingDependencyError as exc:
    assert "matplotlib" in str(exc)
else:
    raise AssertionError("plot_zoo drew without matplotlib")
assert "torch" not in sys.modules
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
