"""Fixtures shared by the whole suite: a seeded generator, every preset exported once."""

from __future__ import annotations

import pytest
import torch

import rope_export as rx


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Every preset exported once (default form): {preset: path}."""
    root = tmp_path_factory.mktemp("validate")
    out = {}
    for preset in rx.list_presets():
        out[preset] = rx.export_onnx(rx.load_preset(preset), root / f"{preset.replace(':', '_')}.onnx")
    return out
