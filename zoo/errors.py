"""Errors users see: each names what is wrong and, where it can, what to do."""

from __future__ import annotations

import re


class EdgezooError(Exception):
    """Base of the project's expected failures (the CLI prints one line and exits non-zero)."""

    exit_code = 2


class MissingDependencyError(EdgezooError):
    """An optional package a command needs is not installed (an edge install has no torch, timm or gradio)."""


class ConfigError(EdgezooError):
    """An option (flag, recipe or config.yaml value) that cannot work: names the option and what it accepts."""


class RunDirError(EdgezooError):
    """A RUN_DIR in a state that does not fit the request (not a run, already holds one, incomplete, ...)."""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def optional_packages() -> dict[str, str]:
    """{package: the extra that installs it} for edgezoo's optional dependencies, from its own metadata
    (pyproject.toml's optional-dependencies, so the two never disagree); empty when edgezoo is not installed."""
    from importlib import metadata  # only on this error path: `import zoo` stays cheap

    try:
        requires = metadata.requires("edgezoo") or []
    except metadata.PackageNotFoundError:
        return {}
    core, extras = set(), {}
    for req in requires:
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)[^;]*(?:;.*extra\s*==\s*['\"]([^'\"]+)['\"])?", req)
        if not m:
            continue
        name, extra = _normalize(m.group(1)), m.group(2)
        if extra is None:
            core.add(name)
        elif extra not in ("all", "test"):
            extras.setdefault(name, extra)  # the first extra listing it (onnxruntime: edge, before train)
    return {name: extra for name, extra in extras.items() if name not in core}


def missing_dependency(exc: ModuleNotFoundError) -> MissingDependencyError | None:
    """The one-line error for an optional dependency that is not installed; None for any other module."""
    package = (exc.name or "").split(".")[0]
    extra = optional_packages().get(_normalize(package)) if package else None
    if extra is None:
        return None
    return MissingDependencyError(f"{package} is not installed (an optional dependency): pip install \".[{extra}]\" "
                                  f"in a clone of edgezoo, or pip install \"edgezoo[{extra}]\"")
