"""Static int8 quantization (QDQ, per-channel weights) calibrated on real images, and ORT-format conversion.

Calibration activations come from the run's own training images through the
deployment preprocessing, never random tensors (random inputs give activation
ranges unlike real images). The default scheme is W8A8: int8 per-channel
weights, uint8 activations (U8S8, the format onnxruntime's x86 and ARM int8
kernels run), with ``reduce_range`` (7-bit weights) because x86 CPUs without
VNNI multiply U8S8 with VPMADDUBSW, whose int16 sums saturate with full-range
weights (onnxruntime's quantization guide: not needed with VNNI or on ARM).

``activations="auto"`` measures each candidate on held-out training images and
keeps the first that reaches the target median cosine to fp32, in this order:
1. W8A8 with 7-bit weights: runs exactly on every CPU;
2. W8A8 with full-range int8 weights: 7-bit weights cost some backbones the
   target (EfficientNet-Lite0 at 112 px on the ant/bee photos: median cosine
   0.978 with them, 0.994 without; BENCHMARKS.md, "Hymenoptera"), and CPUs with
   VNNI (x86) or dot-product instructions (ARM) run it exactly; validation.json
   says so;
3. W8A8 with full-range weights and the input stage float (`input_stage`: the
   nodes up to the third convolution, the stem and first block of
   EfficientNet-Lite, which see the image at full resolution): the stage readout
   of Lite0 on the flowers reached median cosine 0.9835 quantized everywhere and
   0.9933 so, and ran in 0.62 ms at batch 1 against fp32's 1.19 (BENCHMARKS.md, "Flowers");
4. W8A16 (int8 weights, 16-bit activations): MobileNetV3's hard-swish and
   squeeze-excite stacks after short self-supervised runs reach only ~0.95 with
   8-bit activations. The same 4x smaller file and near-fp32 embeddings, but no
   int8 arithmetic on CPU (it suits NPUs with 16-bit activation support).
Dynamic quantization is the last resort, only when static quantization raises
for the graph. validation.json records the scheme and why.

A stage readout (zoo/readout.py) is quantized in its trunk only: its head (pooling, the per-part normalise,
centre, normalise, the concatenation and the linear map) stays float (`float_head`). Quantized, the
centring of nearly-equal parts amplified the error: on the flowers W8A16 reached median cosine 0.9895.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from zoo.edge import INPUT_NAME, open_session
from zoo.errors import EdgezooError
from zoo.fsutil import atomic_path
from zoo.preprocess import l2_normalize

log = logging.getLogger(__name__)

CALIBRATION_METHOD = "MinMax"
ACTIVATIONS = ("auto", "8", "16")
MIN_CALIB_IMAGES = 256


class QuantizationError(EdgezooError):
    """Neither static nor dynamic int8 quantization produced a model."""


class OrtConversionError(EdgezooError):
    """onnxruntime's ORT-format converter failed."""


def _reader(calib: np.ndarray, batch_size: int) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        """Feeds the calibration images in batches (onnxruntime's calibration interface)."""

        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(
                {INPUT_NAME: calib[i:i + batch_size]} for i in range(0, len(calib), batch_size))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    return _Batches()


def _pre_process(src: Path, dst: Path) -> bool:
    """onnxruntime's recommended pre-pass (shape inference + graph optimisation); False if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
        return True
    except Exception as exc:  # noqa: BLE001 - optional pass: quantize the plain model instead
        log.warning("quant_pre_process failed (%s: %s); quantizing the model as exported", type(exc).__name__, exc)
        return False


class _RankOneWeights(logging.Filter):
    """Drops (and counts) onnxruntime's "Axis 1 is out-of-range for weight 'X' with rank 1" warnings.

    Per-channel quantization has no channel axis in a rank-1 weight (a LayerNorm scale: a ViT has
    two a block), so onnxruntime quantizes it per-tensor, as intended; one such line per weight
    would bury the export's own log. onnxruntime logs them on the root logger.
    """

    _PATTERN = re.compile(r"Axis -?\d+ is out-of-range for weight '(.+)' with rank 1$")

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        match = self._PATTERN.match(record.getMessage())
        if match:
            self.names.append(match.group(1))
        return match is None


@contextlib.contextmanager
def _per_tensor_rank_one_weights() -> Iterator[None]:
    quiet = _RankOneWeights()
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(quiet)
        if quiet.names:
            log.info("%d rank-1 weight(s) quantized per-tensor (no channel axis), e.g. %s", len(quiet.names),
                     quiet.names[0])


INPUT_STAGE_CONVS = 3  # `input_stage`: EfficientNet-Lite's conv_stem, blocks.0's conv_dw and conv_pw
TRUNK_SCOPE = "trunk"  # zoo.readout.StageReadout's attribute: the timm backbone inside a stage readout


def graph_nodes(fp32_path: Path) -> list[Any]:
    """The exported graph's nodes in topological order (weights not read): what `float_head` and `input_stage`
    choose from, read once per quantization."""
    import onnx

    return list(onnx.load(str(fp32_path), load_external_data=False).graph.node)


def float_head(nodes: Sequence[Any]) -> list[str]:
    """The names of a stage readout's nodes outside its trunk (kept float), [] for a plain backbone.

    Read from the exported graph: the dynamo exporter records each node's module path in its metadata, the
    TorchScript one in its name (``/trunk/...``). The quantizer's pre-pass keeps node names, not metadata.
    """
    def in_trunk(node: Any) -> bool:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        return f"'{TRUNK_SCOPE}" in scopes or node.name.startswith(f"/{TRUNK_SCOPE}/")

    if not any(in_trunk(n) for n in nodes):
        return []
    return [n.name for n in nodes if not in_trunk(n)]


def input_stage(nodes: Sequence[Any], convs: int = INPUT_STAGE_CONVS) -> list[str]:
    """The names of the graph's nodes up to and including its `convs`-th convolution (ONNX graphs are in
    topological order): the layers that see the image at full resolution."""
    names: list[str] = []
    for node in nodes:
        names.append(node.name)
        convs -= node.op_type == "Conv"
        if convs == 0:
            return names
    return names


def _static(src: Path, dst: Path, calib: np.ndarray, bits: int, batch_size: int, *,
            reduce_range: bool | None = None, float_nodes: list[str] | None = None) -> dict[str, Any]:
    """One static QDQ quantization; `reduce_range` (7-bit weights) defaults to on for 8-bit activations;
    `float_nodes` stay float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    act = QuantType.QUInt8 if bits == 8 else QuantType.QUInt16
    reduce_range = bits == 8 if reduce_range is None else reduce_range
    with _per_tensor_rank_one_weights():
        quantize_static(str(src), str(dst), _reader(calib, batch_size), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range, activation_type=act,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHOD),
                        nodes_to_exclude=list(float_nodes or []))
    return {"mode": "static", "scheme": f"W8A{bits}", "format": "QDQ", "per_channel": True,
            "reduce_range": reduce_range, "activation_type": act.name, "weight_type": "QInt8",
            "calibration_method": CALIBRATION_METHOD, "num_calibration_images": int(len(calib)),
            **({"float_nodes": len(float_nodes)} if float_nodes else {})}


def median_cosine(ref_model: Path, model: Path, x: np.ndarray, batch_size: int = 64) -> float:
    """Median cosine between two models' embeddings of the same normalised inputs."""
    outs = []
    for path in (ref_model, model):
        sess = open_session(path)
        outs.append(l2_normalize(np.concatenate([sess.run(None, {INPUT_NAME: x[i:i + batch_size]})[0]
                                                 for i in range(0, len(x), batch_size)])))
    return float(np.median(np.sum(outs[0] * outs[1], axis=1)))


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calib: np.ndarray, check: np.ndarray | None = None,
                  *, activations: str = "auto", target_median_cosine: float = 0.99, batch_size: int = 32,
                  ) -> dict[str, Any]:
    """Write the int8-weight model calibrated on `calib`; return how it was made.

    calib, check: (N, 3, S, S) normalised real images; `check` (held out from calibration) decides, under
    ``activations="auto"``, whether 8-bit activations keep the median cosine to fp32 >= the target.
    """
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    with atomic_path(out_path, ".tmp.onnx") as tmp_out, tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        src = prepped if _pre_process(fp32_path, prepped) else fp32_path
        nodes = graph_nodes(fp32_path)
        keep, first = float_head(nodes), input_stage(nodes)
        try:
            info = _static(src, tmp_out, calib, 16 if activations == "16" else 8, batch_size, float_nodes=keep)
            if activations == "auto":
                info = _maybe_widen(info, fp32_path, src, tmp_out, calib, check, target_median_cosine, batch_size,
                                    keep, first)
        except Exception as exc:  # noqa: BLE001 - static does not apply to this graph: fall back, say why
            info = _dynamic(src, tmp_out, f"static quantization failed: {type(exc).__name__}: {exc}")
        info["pre_processed"] = src == prepped
    log.info("wrote %s (%s %s)", out_path, info["mode"], info.get("scheme", ""))
    return info


# The candidates `activations="auto"` measures after the portable W8A8, in order (see the module docstring).
FULL_RANGE_NOTE = ("full-range int8 weights: exact on CPUs with VNNI (x86) or dot-product instructions (ARM); "
                   "onnxruntime's U8S8 kernels on AVX2-only x86 may saturate")


def _maybe_widen(info: dict[str, Any], fp32_path: Path, src: Path, dst: Path, calib: np.ndarray,
                 check: np.ndarray | None, target: float, batch_size: int, keep: list[str], first: list[str],
                 ) -> dict[str, Any]:
    """Keep the portable W8A8 if it meets the target on held-out images, else full-range W8A8, else that with the
    input stage float, else W8A16."""
    x = check if check is not None and len(check) else calib
    cosines = {"W8A8": median_cosine(fp32_path, dst, x)}
    info["check_median_cosine"] = {**cosines, "num_images": int(len(x))}
    if cosines["W8A8"] >= target:
        return info
    reason = f"W8A8 with 7-bit weights (reduce_range) gave median cosine {cosines['W8A8']:.4f} < {target}"
    full = _static(src, dst, calib, 8, batch_size, reduce_range=False, float_nodes=keep)
    cosines["W8A8 full-range"] = median_cosine(fp32_path, dst, x)
    if cosines["W8A8 full-range"] >= target:
        log.info("%s on %d held-out images; full-range int8 weights give %.4f", reason, len(x),
                 cosines["W8A8 full-range"])
        return {**full, "check_median_cosine": {**cosines, "num_images": int(len(x))},
                "reason": f"{reason} on held-out training images", "note": FULL_RANGE_NOTE}
    stage = _static(src, dst, calib, 8, batch_size, reduce_range=False, float_nodes=keep + first)
    cosines["W8A8 full-range, input stage float"] = median_cosine(fp32_path, dst, x)
    reason = (f"W8A8 median cosine {cosines['W8A8']:.4f} (7-bit weights) and {cosines['W8A8 full-range']:.4f} "
              f"(full-range) < {target} on held-out training images")
    if cosines["W8A8 full-range, input stage float"] >= target:
        log.info("%s; with the %d nodes of the input stage float: %.4f", reason, len(first),
                 cosines["W8A8 full-range, input stage float"])
        return {**stage, "check_median_cosine": {**cosines, "num_images": int(len(x))}, "reason": reason,
                "note": f"{FULL_RANGE_NOTE}; the input stage ({len(first)} nodes, up to the third convolution) "
                        "runs in float"}
    log.warning("8-bit activations give median cosine %.4f (7-bit weights) / %.4f (full-range) / %.4f (the input "
                "stage float) < %.4f on %d held-out images: re-quantizing with 16-bit activations (W8A16)",
                cosines["W8A8"], cosines["W8A8 full-range"], cosines["W8A8 full-range, input stage float"], target,
                len(x))
    wide = _static(src, dst, calib, 16, batch_size, float_nodes=keep)
    cosines["W8A16"] = median_cosine(fp32_path, dst, x)
    wide["check_median_cosine"] = {**cosines, "num_images": int(len(x))}
    wide["reason"] = (f"{reason}; {cosines['W8A8 full-range, input stage float']:.4f} with the input stage "
                      "float")
    return wide


def _dynamic(src: Path, dst: Path, reason: str) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.warning("%s; falling back to dynamic quantization", reason)
    try:
        quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8)
    except Exception as exc:  # noqa: BLE001
        raise QuantizationError(f"int8 quantization failed: {reason}; dynamic: {exc}") from exc
    return {"mode": "dynamic", "scheme": "dynamic", "reason": reason, "per_channel": True, "weight_type": "QInt8"}


def convert_to_ort(models: list[Path], out_dir: Path) -> dict[str, Any]:
    """ORT-format copies of `models` plus the required-operators config for a minimal onnxruntime build.

    Uses onnxruntime's documented converter (``python -m onnxruntime.tools.convert_onnx_models_to_ort``) on a
    folder holding just these models, so one config covers them all.
    """
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        src, dst = Path(tmp) / "src", Path(tmp) / "dst"
        src.mkdir()
        for m in models:
            shutil.copy2(m, src / m.name)
        cmd = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", str(src),
               "--output_dir", str(dst), "--optimization_style", "Fixed"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log.debug("%s\n%s%s", " ".join(cmd), proc.stdout, proc.stderr)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OrtConversionError(f"ORT-format conversion failed: {tail[0]}")
        written = []
        for f in sorted(dst.iterdir()):
            if f.suffix in (".ort", ".config"):
                f.replace(out_dir / f.name)
                written.append(f.name)
    return {"files": written, "optimization_style": "Fixed",
            "converter": "python -m onnxruntime.tools.convert_onnx_models_to_ort"}
