"""The zoo table: every published model side by side, to choose by quality, size and speed.

Rows are `zoo.catalog` index rows, read from each published repo's own files
(training/metrics.json, training/eval.json, onnx/validation.json, config.json), so
the table cannot drift from what was published. Latencies are the ones export's
validation measured on the ONNX files (``export.timing.latency_ms``, the harness
of benchmarks/inference_latency.py), on the CPU named in the table. torch-free.

Every entry must learn: a row whose kNN top-1 does not beat the same architecture
at random init by `LEARNED_MARGIN` is flagged in the table, not hidden. A row that
started from pretrained weights (``--init``) is also shown against them: its
"vs init" column, and a reference row for the untrained starting weights
(`reference_rows`), the free baseline a person would otherwise use.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from app.zoo.plot import pareto_front
from zoo.records import CatalogRow

LEARNED_MARGIN = 0.05  # kNN top-1 over random init (5 points) a published backbone must clear


def learned(row: CatalogRow) -> bool | None:
    """True when kNN top-1 beats random init by LEARNED_MARGIN; None when either is unknown."""
    knn, rand = row.knn_top1, row.random_init_knn_top1
    if knn is None or rand is None:
        return None
    return knn - rand >= LEARNED_MARGIN


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(fmt: str) -> Callable[[Any], str]:
    return lambda value: "-" if value is None else format(value, fmt)


def _learned_cell(row: CatalogRow) -> str:
    knn, rand = row.knn_top1, row.random_init_knn_top1
    if knn is None or rand is None:
        return "-"
    gain = f"{100 * (knn - rand):+.1f}"
    return gain if learned(row) else f"{gain} **below +{100 * LEARNED_MARGIN:.0f}**"


def _init_cell(row: CatalogRow) -> str:
    knn, init = row.knn_top1, row.init_knn_top1
    return "-" if knn is None or init is None else f"{100 * (knn - init):+.1f}"


def _model_cell(row: CatalogRow) -> str:
    if row.reference:
        return f"{row.repo_id}, untrained (reference)"
    return f"{row.name}@{row.version or '-'}"


# Columns of a reference row taken from the row it comes from: the same network at the same input size, in fp32
# (its int8 model would be quantized from other weights, and may get another scheme: not the row's to show).
_SAME_NETWORK = ("architecture", "model_args", "img_size", "embed_dim", "random_init_knn_top1", "params_m", "gmacs",
                 "fp32_b1_ms", "fp32_b32_ips", "fp32_mb", "latency_cpu")
# ... of a stage readout's row (zoo/readout.py): its starting weights are the plain trunk, without the readout's
# layers, so neither its size nor its latency is the row's
_SAME_TRUNK = ("architecture", "model_args", "img_size", "random_init_knn_top1")


def reference_rows(rows: Sequence[CatalogRow]) -> list[CatalogRow]:
    """One row per starting weights (init, architecture, px) the rows began from, untrained, with the kNN that
    `edgezoo eval` measured for them under the row's own protocol; size and fp32 latency are the row's (the same
    network)."""
    found: dict[tuple[Any, ...], CatalogRow] = {}
    for row in sort_rows(rows):
        if row.reference or not row.init or row.init_knn_top1 is None:
            continue
        key = (row.init, row.architecture, row.img_size)
        same = _SAME_TRUNK if row.readout else _SAME_NETWORK
        found.setdefault(key, CatalogRow(**{k: getattr(row, k) for k in same}, repo_id=row.init,
                                         reference=True, knn_top1=row.init_knn_top1, rankme=row.init_rankme))
    return list(found.values())


def _int8_cell(row: CatalogRow) -> str:
    scheme, drop, passed = row.int8_scheme, row.int8_knn_drop, row.onnx_passed
    verdict = {True: "passed", False: "**FAILED**"}.get(passed, "-")
    parts = [scheme or "-", verdict]
    if drop is not None:
        parts.insert(1, f"drop {drop:.2f}")
    return ", ".join(parts)


def _arch_cell(row: CatalogRow) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in sorted((row.model_args or {}).items()))
    return f"{row.architecture or '-'}" + (f" ({shown})" if shown else "")


# (title, cell of a row); the order is the table's
COLUMNS: tuple[tuple[str, Callable[[CatalogRow], str]], ...] = (
    ("model", _model_cell),
    ("architecture", _arch_cell),
    ("px", lambda r: _num("d")(r.img_size)),
    ("kNN top-1 %", lambda r: _pct(r.knn_top1)),
    ("random init %", lambda r: _pct(r.random_init_knn_top1)),
    ("gain (points)", _learned_cell),
    ("vs init (points)", _init_cell),
    ("RankMe", lambda r: _num(".0f")(r.rankme)),
    ("params M", lambda r: _num(".2f")(r.params_m)),
    ("GMACs", lambda r: _num(".3f")(r.gmacs)),
    ("fp32 b1 ms", lambda r: _num(".2f")(r.fp32_b1_ms)),
    ("int8 b1 ms", lambda r: _num(".2f")(r.int8_b1_ms)),
    ("fp32 b32 img/s", lambda r: _num(".0f")(r.fp32_b32_ips)),
    ("int8 b32 img/s", lambda r: _num(".0f")(r.int8_b32_ips)),
    ("fp32 MB", lambda r: _num(".1f")(r.fp32_mb)),
    ("int8 MB", lambda r: _num(".1f")(r.int8_mb)),
    ("int8 (kNN drop, validation)", _int8_cell),
    ("train images", lambda r: _num("d")(r.num_images)),
    ("epochs", lambda r: _num("d")(r.epochs)),
    ("train s", lambda r: _num(".0f")(r.train_s)),
    ("device", lambda r: r.device or "-"),
)


def sort_rows(rows: Sequence[CatalogRow]) -> list[CatalogRow]:
    """Best kNN top-1 first; rows without one last, by name."""
    return sorted(rows, key=lambda r: (r.knn_top1 is None, -(r.knn_top1 or 0.0), r.name))


# The columns README shows (its top-5 excerpt of ZOO.md).
COMPACT = ("model", "architecture", "kNN top-1 %", "random init %", "gain (points)", "vs init (points)", "params M",
           "int8 b1 ms", "int8 b32 img/s", "int8 MB", "int8 (kNN drop, validation)")


def markdown_table(rows: Sequence[CatalogRow], limit: int | None = None,
                   columns: Sequence[str] | None = None) -> str:
    """The table in markdown, best kNN first, with the `reference_rows` of the rows that started from pretrained
    weights; models on the accuracy/int8-latency Pareto front carry a *.

    `columns`: titles of COLUMNS to show (default: all), e.g. COMPACT.
    """
    ordered = sort_rows([*rows, *reference_rows(rows)])
    front = {id(ordered[i]) for i in pareto_front([r.to_json() for r in ordered])}
    chosen = [c for c in COLUMNS if columns is None or c[0] in columns]
    lines = ["| " + " | ".join(title for title, _ in chosen) + " |",
             "|" + "|".join("---" if i < 2 else "---:" for i in range(len(chosen))) + "|"]
    for row in ordered[:limit]:
        cells = [cell(row) for _, cell in chosen]
        if id(row) in front:
            cells[0] += " *"
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def row_summary(row: CatalogRow) -> str:
    """One line of a row for a picker: architecture, kNN, int8 latency and size (what the table ranks by)."""
    parts = [_arch_cell(row)]
    if row.knn_top1 is not None:
        parts.append(f"kNN {100 * row.knn_top1:.1f}%" + (" (below random init +5)" if learned(row) is False else ""))
    if row.int8_b1_ms is not None:
        parts.append(f"int8 {row.int8_b1_ms:.2f} ms")
    if row.int8_mb is not None:
        parts.append(f"{row.int8_mb:.1f} MB")
    return ", ".join(parts)


def not_learned(rows: Sequence[CatalogRow]) -> list[str]:
    """Names of the rows that do not beat their random init by LEARNED_MARGIN (the table flags them too)."""
    return [r.name for r in sort_rows(rows) if learned(r) is False]


def latency_machines(rows: Sequence[CatalogRow]) -> list[str]:
    """The CPUs the table's latencies were measured on (one, when the zoo was built on one machine)."""
    return sorted({str(r.latency_cpu) for r in rows if r.latency_cpu})


LEGEND = (
    "kNN top-1: `edgezoo eval` on the final weights (k=200, the training data's labelled test split); random init: "
    "the same architecture and protocol before training; gain: the difference, flagged when under "
    f"+{100 * LEARNED_MARGIN:.0f} points. vs init: a model that started from pretrained weights (`--init`) against "
    "those weights untrained, same protocol; each such start also has its own reference row (untrained, the same "
    "network, so the same size and fp32 latency; its int8 is not measured; a stage readout's start is its trunk "
    "alone, whose size and latency are not measured either). GMACs: one image at the model's input size (torch's FLOP counter / 2). "
    "Latency: onnxruntime, median of 30 calls at batch 1 and 8 at batch 32, measured by `edgezoo export` on the "
    "files it validated (export/timing.py, the harness of benchmarks/inference_latency.py). int8: the shipped "
    "quantization scheme, its kNN drop against torch in points, and the validation verdict. "
    "`*`: on the Pareto front of kNN top-1 against int8 latency (nothing else is both more accurate and faster)."
)
