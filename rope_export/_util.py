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
import stat
import sys
import tempfile
import warnings

__all__ = ["DTYPE_NAMES", "FORM_NAMES", "DEFAULT_PROVIDERS", "torch_dtype", "InputError", "atomic_write", "write_together", "check_output_path", "PipeSafeStdout",
           "stderr_progress", "clear_progress",
           "quiet_exporter", "silent_fds", "error_line", "printable", "same_file"]

# Activation dtypes of q/k and of exported graphs (angles, sin and cos are float32 in every case).
DTYPE_NAMES = ("float32", "float16", "bfloat16")
# The graph forms (rope_export.export.forms says which fits which spec).
FORM_NAMES = ("auto", "fused", "decomposed", "contrib", "table", "plugin")
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


def check_output_path(path: str | os.PathLike) -> str:
    """The real file an output path names (through symlinks), checked before any work: its
    folder exists and is writable, and nothing but a regular file sits there.

    Raises:
        OSError: naming the problem.
    """
    path = os.fspath(path)
    target = os.path.realpath(path)
    if os.path.exists(target) and not os.path.isfile(target):
        raise OSError(f"{path} is not a regular file (a device, FIFO or folder): refusing to replace it")
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise OSError(f"output directory does not exist: {directory}")
    if not os.access(directory, os.W_OK):
        raise OSError(f"output directory is not writable: {directory}")
    return target


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same resolved path (through symlinks), or, both
    existing, the same device and inode (hard links, bind mounts)."""
    a, b = os.fspath(a), os.fspath(b)
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def write_together(files: dict) -> None:
    """Write ``{path: bytes}`` so that either every file is new or none is: each goes to a
    temporary file beside its target first, and the renames follow once all are written."""
    staged = []
    try:
        for path, data in files.items():
            target = check_output_path(path)
            fd, tmp = tempfile.mkstemp(prefix=".rope_export-", dir=os.path.dirname(target))
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode) if os.path.exists(target) else 0o666 & ~umask)
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename:
    readers see the old file or the whole new one, and a failure leaves nothing at ``path``.

    A symlink is written through (its target is replaced, the link stays); a device, FIFO or
    folder at ``path`` is refused. The file gets the mode a plain ``open()`` would give (the
    umask's), or keeps the mode of the file it replaces. A process killed with SIGKILL mid-write
    can leave a ``.rope_export-*`` temporary file beside the output (nothing can clean that up).
    """
    write_together({path: data})


class PipeSafeStdout:
    """sys.stdout for a command line: when the reader goes away (``| head``), later output is
    dropped instead of raising BrokenPipeError, so the command still finishes and its exit
    status still follows its verdict."""

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._broken()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._broken()

    def _broken(self) -> None:
        self.broken = True
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name):
        return getattr(self._stream, name)


def stderr_progress(message: str) -> None:
    """A one-line progress indicator on a terminal; nothing in a log (a CI log keeps the
    result, not a line per step)."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + message)
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


def printable(text: str) -> str:
    """Text from a file or a user (a path, a name, a message quoting them) with every control
    character escaped: a crafted file name cannot drive the terminal (``\r\x1b[2K``)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def error_line(exc: BaseException) -> str:
    """``Type: first line`` of an exception, without the terminal colours the exporter adds."""
    first = (re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"
