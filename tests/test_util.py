"""Tests of rope_export._util: files written atomically, with the umask, through symlinks, never onto special files."""

from __future__ import annotations

import os

import pytest

import rope_export as rx
from rope_export.cli import main

pytest.importorskip("onnxruntime")


def test_files_honour_the_umask_write_through_symlinks_and_refuse_special_files(tmp_path):
    old = os.umask(0o022)
    try:
        path = rx.export_onnx(rx.RopeSpec.standard(8), tmp_path / "a.onnx", form="fused")
    finally:
        os.umask(old)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    target, link = tmp_path / "target.onnx", tmp_path / "link.onnx"
    link.symlink_to(target)
    rx.export_onnx(rx.RopeSpec.standard(8), link, form="fused")
    assert link.is_symlink() and target.is_file()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        rx.export_onnx(rx.RopeSpec.standard(8), fifo, form="fused")
    assert main(["export", "--preset", "mistral-7b", "--out", "/dev/null"]) == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".rope_export-")]
