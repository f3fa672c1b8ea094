"""pytest plugin: ``pytest --rope-validate model.onnx [--rope-providers cuda,cpu] [--rope-allow-missing]``
adds one test per file that runs `rope_export.validate` and fails with its table."""

from __future__ import annotations

import pytest

from ._util import DEFAULT_PROVIDERS


def pytest_addoption(parser):
    group = parser.getgroup("rope_export", "rotary embedding parity (rope_export)")
    group.addoption("--rope-validate", action="append", default=[], metavar="MODEL.onnx",
                    help="validate this exported rotary graph against torch (repeatable)")
    group.addoption("--rope-providers", default=",".join(DEFAULT_PROVIDERS),
                    help=f"comma list of onnxruntime providers (default {','.join(DEFAULT_PROVIDERS)})")
    group.addoption("--rope-allow-missing", action="store_true", help="unavailable providers do not fail")


class RopeParityItem(pytest.Item):
    def __init__(self, *, onnx_path: str, providers: tuple, allow_missing: bool, **kwargs):
        super().__init__(**kwargs)
        self.onnx_path, self.providers, self.allow_missing = onnx_path, providers, allow_missing

    def runtest(self):
        from .testing import assert_parity

        assert_parity(self.onnx_path, providers=self.providers, allow_missing=self.allow_missing)

    def repr_failure(self, excinfo, style=None):
        return str(excinfo.value)

    def reportinfo(self):
        return self.onnx_path, None, f"rope parity: {self.onnx_path}"


def pytest_collection_modifyitems(session, config, items):
    providers = tuple(p.strip() for p in config.getoption("rope_providers").split(",") if p.strip())
    for path in config.getoption("rope_validate"):
        items.append(RopeParityItem.from_parent(session, name=f"rope-parity[{path}]", onnx_path=path,
                                                providers=providers, allow_missing=config.getoption("rope_allow_missing")))
