"""Shared fixtures: real data from ../shared/datasets, small and fast."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _hermetic_env(tmp_path_factory):
    """No test reaches the internet or a user's caches; CIFAR-10 is unpacked once under ./data."""
    os.environ.setdefault("EDGEZOO_CACHE", str(tmp_path_factory.mktemp("edgezoo-cache")))
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "0")
    os.environ.pop("HF_TOKEN", None)
    yield


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    from zoo.datasets import find_cifar10

    return find_cifar10(download=False)


@pytest.fixture(scope="session")
def hymenoptera_root() -> Path:
    from zoo.datasets import shared_datasets

    shared = shared_datasets()
    if shared is None:
        pytest.skip("../shared/datasets not found")
    return shared / "hymenoptera"


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


@pytest.fixture(scope="session")
def cifar_test_200(tmp_path_factory, cifar_root) -> Path:
    """200 CIFAR-10 test images (20 per class, linked): an eval split for tiny runs, whose end-of-run kNN
    would otherwise embed all 10,000 test images."""
    from zoo.datasets import resolve

    test = resolve("cifar10:test")
    root = tmp_path_factory.mktemp("cifar10-test-200")
    for cls in test.classes:
        (root / cls).mkdir()
        for p in [p for p in test.paths if p.parent.name == cls][:20]:
            (root / cls / p.name).symlink_to(p)
    return root
