"""Small helpers shared across the package: dtype names, atomic writes, progress lines, and
keeping the torch exporters quiet.

Nothing here imports torch at module level, so the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings

__all__ = ["DTYPE_NAMES", "DEFAULT_PROVIDERS", "torch_dtype", "InputError", "atomic_write", "stderr_progress", "clear_progress",
           "quiet_exporter", "silent_fds", "error_line"]

# Activation dtypes of q/k and of exported graphs (angles, sin and cos are float32 in every case).
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# The execution providers a validation runs when none is named (library, CLI and pytest
# plugin alike): the one every machine has, so the same file is checkable in CI without a GPU.
DEFAULT_PROVIDERS = ("cpu",)


def torch_dtype(name: str):
    """The torch dtype for one of `DTYPE_NAMES` (ValueError naming the choices otherwise)."""
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {name!r}")
    import torch

    return getattr(torch, name)


class InputError(ValueError):
    """The file, spec or inputs given cannot be used (the CLI exits with code 2)."""


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename:
    readers see the old file or the whole new one, and a failure leaves nothing at ``path``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".rope_export-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def stderr_progress(message: str) -> None:
    """A one-line progress indicator on a terminal, plain lines otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + message)
    else:
        sys.stderr.write(message + "\n")
    sys.stderr.flush()


def clear_progress() -> None:
    """Erase the progress line `stderr_progress` left on a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()


@contextlib.contextmanager
def quiet_exporter():
    """Silence the progress and warnings the torch exporters print for their own developers."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def silent_fds():
    """Point file descriptors 1 and 2 at /dev/null (C++ code that prints whole graphs)."""
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(null, 1), os.dup2(null, 2)
        yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, without the terminal colours the exporter adds."""
    first = (re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"
