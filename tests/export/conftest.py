"""Fixtures of the rope_export.export tests: graphs exported once per session."""

from __future__ import annotations

import pytest

import rope_export as rx


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    cache = {}
    root = tmp_path_factory.mktemp("onnx")

    def get(preset, form="fused", opset=23, dtype="float32", spec=None):
        key = (preset, form, opset, dtype)
        if spec is not None or key not in cache:
            path = str(root / f"{preset.replace(':', '_')}-{form}-{opset}-{dtype}-{len(cache)}.onnx")
            rx.export_onnx(spec or rx.load_preset(preset), path, opset=opset, form=form, dtype=dtype)
            if spec is not None:
                return path
            cache[key] = path
        return cache[key]

    return get
