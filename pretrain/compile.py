"""torch.compile of the backbone, with a fallback to eager that a run survives.

Compilation happens lazily at the first call, and a backend that fails (no C++
compiler, an unsupported op, a CUDA-graph rule broken) would otherwise fail the
first training step, minutes into a scarce GPU window. `compile_backbone`
therefore compiles in place (state_dict names unchanged), runs a probe of the
training step's shape at once, and on any failure logs why and trains eagerly.

Modes: torch.compile's ``default``, ``reduce-overhead`` (CUDA graphs),
``max-autotune``, ``max-autotune-no-cudagraphs``, and ``aot_eager``: the same
dynamo + AOTAutograd path without code generation, which is what a CPU test can
afford (inductor compiles C++ for minutes on 2 cores).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from pretrain.config import COMPILE_MODES

log = logging.getLogger(__name__)

CUDAGRAPH_MODES = ("reduce-overhead", "max-autotune")
PROBE_CALLS = 3  # CUDA-graph trees warm up, record, then replay: a failure shows by the third call


@dataclass(frozen=True)
class CompileResult:
    """What happened to a compile request: recorded in metrics.json and the speed benchmark."""

    mode: str
    compiled: bool
    seconds: float  # compilation + probe calls
    error: str | None = None

    @property
    def cudagraphs(self) -> bool:
        return self.compiled and self.mode in CUDAGRAPH_MODES

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compile_kwargs(mode: str) -> dict[str, str]:
    """torch.compile's arguments for one of COMPILE_MODES."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    return {"backend": "aot_eager"} if mode == "aot_eager" else {"mode": mode}


def step_begin(result: CompileResult | None) -> None:
    """Mark a new training step for CUDA-graph trees (their outputs are reused from step to step)."""
    if result is not None and result.cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()


def compile_backbone(backbone: nn.Module, mode: str, views: list[torch.Tensor], amp: bool = False) -> CompileResult:
    """Compile `backbone` in place and probe it PROBE_CALLS times with a training step's shape: a forward of
    each view (a method's views per step, in the training memory format), then one backward.

    The probe's effect is undone: buffers (BatchNorm statistics) restored, gradients cleared.
    On failure the backbone runs eagerly again and the result says why.
    """
    def probe() -> None:
        with torch.autocast(device_type=views[0].device.type, dtype=torch.bfloat16, enabled=amp):
            loss = sum(backbone(v).float().square().mean() for v in views)
        loss.backward()

    kwargs = compile_kwargs(mode)
    saved = {name: buf.detach().clone() for name, buf in backbone.named_buffers()}
    t0 = time.perf_counter()
    try:
        backbone.compile(**kwargs)
        for _ in range(PROBE_CALLS):
            if mode in CUDAGRAPH_MODES:
                torch.compiler.cudagraph_mark_step_begin()
            probe()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        result = CompileResult(mode, True, round(time.perf_counter() - t0, 2))
        log.info("torch.compile (%s): compiled and probed in %.1f s", mode, result.seconds)
    except Exception as err:  # any backend failure: the run goes on eagerly
        backbone._compiled_call_impl = None  # nn.Module.compile's slot; None is eager
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
        result = CompileResult(mode, False, round(time.perf_counter() - t0, 2), reason)
        log.warning("torch.compile (%s) failed, training eagerly: %s", mode, reason)
    finally:
        with torch.no_grad():
            for name, buf in backbone.named_buffers():
                buf.copy_(saved[name])
        for p in backbone.parameters():
            p.grad = None
    return result


@contextmanager
def eager(module: nn.Module) -> Iterator[nn.Module]:
    """Run a compiled module eagerly inside the block (kNN evaluation: eval mode and odd batch sizes
    would each cost a recompilation for a pass that runs a few times a run)."""
    compiled = getattr(module, "_compiled_call_impl", None)
    module._compiled_call_impl = None
    try:
        yield module
    finally:
        module._compiled_call_impl = compiled
