"""torch backbone -> one self-contained ONNX file with a dynamic batch axis.

The torch.export-based exporter (``dynamo=True``) is tried first: it is torch's
documented default and handles every timm family we ship (resnet, mobilenetv3,
efficientnet, vit and the ``*_smallstem`` variants). The TorchScript exporter is
the fallback for a model torch.export cannot trace. Weights are kept inside the
file (``external_data=False``) so a model is one file to hash, ship and load.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.edge import INPUT_NAME, OUTPUT_NAME
from zoo.errors import EdgezooError
from zoo.fsutil import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

OPSET = 18  # the dynamo exporter's floor; onnxruntime >= 1.14 runs it
EXPORTERS = ("auto", "dynamo", "torchscript")
MAX_BATCH = 65536


class OnnxExportError(EdgezooError):
    """The backbone could not be exported to a valid ONNX model."""


def _export_dynamo(model: "torch.nn.Module", example: "torch.Tensor", path: Path, opset: int) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, opset_version=opset,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                      verbose=False)


def _export_torchscript(model: "torch.nn.Module", example: "torch.Tensor", path: Path, opset: int) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation and tracer warnings are about the exporter, not us
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def export_onnx(model: "torch.nn.Module", path: str | Path, img_size: int, *, exporter: str = "auto",
                opset: int = OPSET) -> str:
    """Write `path` (atomically) and check it; returns the exporter that produced it."""
    import torch

    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    example = torch.randn(2, 3, img_size, img_size)
    model = model.eval()
    order = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    errors: list[str] = []
    with atomic_path(path, ".tmp.onnx") as tmp:
        for name in order:
            try:
                with torch.no_grad():
                    (_export_dynamo if name == "dynamo" else _export_torchscript)(model, example, tmp, opset)
                check_onnx(tmp)
            except Exception as exc:  # noqa: BLE001 - any exporter failure means: try the next one
                errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}")
                log.warning("ONNX export with the %s exporter failed (%s)", name, errors[-1])
                tmp.unlink(missing_ok=True)
                continue
            break
        else:
            raise OnnxExportError(f"ONNX export failed: {'; '.join(errors)}")
    log.info("exported %s with the %s exporter (opset %d)", path, name, opset)
    return name


def check_onnx(path: str | Path) -> None:
    """Full ONNX checker, one input named `input` (N,3,S,S) with a symbolic N, one output `embedding`."""
    import onnx

    path = Path(path)
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i for i in graph.input if i.name not in {init.name for init in graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in graph.output] != [OUTPUT_NAME]:
        raise OnnxExportError(f"{path}: inputs {[i.name for i in inputs]}, outputs {[o.name for o in graph.output]}; "
                              f"expected [{INPUT_NAME!r}] -> [{OUTPUT_NAME!r}]")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4 or dims[0].dim_param == "" or dims[1].dim_value != 3:
        raise OnnxExportError(f"{path}: input shape {[d.dim_param or d.dim_value for d in dims]}, expected "
                              "(batch, 3, S, S) with a dynamic batch")


def describe(path: str | Path) -> dict[str, Any]:
    """Opset, IR version and the input/output signature, for validation.json and the model card."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def shape(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    graph = model.graph
    return {
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "ir_version": model.ir_version,
        "input": {"name": graph.input[0].name, "shape": shape(graph.input[0]), "dtype": "float32"},
        "output": {"name": graph.output[0].name, "shape": shape(graph.output[0]), "dtype": "float32"},
    }
