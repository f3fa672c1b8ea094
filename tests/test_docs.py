"""README.md, CONTRIBUTING.md and docs/*.md: every ```bash and ```python block runs, so a snippet
that stops working fails CI.

Each page runs in a fresh folder of its own, its blocks in order (a later block may read what an
earlier one wrote, never what a later one writes). The folder starts with ``config.json``, a
model's config as the hub serves it (Qwen2-VL-7B's, from ``models/qwen2-vl-7b.json``: a text
decoder and a vision encoder), for the commands that take ``--hf-config config.json``. In bash
blocks ``pip`` does nothing: CI installed the package before the tests ran.

A block opts out with an HTML comment on the line before its fence, which the page renders as
nothing:

    <!-- docs-test: skip REASON -->    not run; REASON is the skip message
    <!-- docs-test: gpu -->            run only where torch sees a CUDA device
    <!-- docs-test: tensorrt -->       run only where a TensorRT builder is installed
    <!-- docs-test: gpu tensorrt -->   both
    <!-- docs-test: fragment -->       part of a larger program: only parsed (python) / syntax-checked (bash)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", "CONTRIBUTING.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*docs-test:\s*(skip|fragment|(?:(?:gpu|tensorrt)\s*)+)\b\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^```(\w*)\s*$")
BLOCK_TIMEOUT = 900


@dataclass
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str = ""
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks_of(page: str) -> list[Block]:
    """The page's bash and python blocks, with the marker on the line before each."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"{page}:{i + 1}: a code block is never closed"
        marker = MARKER.match(lines[i - 1].strip()) if i else None
        if fence[1] in ("bash", "python"):
            out.append(Block(page, i + 1, fence[1], "\n".join(lines[i + 1:end]) + "\n",
                             marker[1] if marker else "", marker[2] if marker else ""))
        elif marker:
            raise AssertionError(f"{page}:{i + 1}: a docs-test marker on a {fence[1] or 'plain'} block, which never runs")
        i = end + 1
    return out


def _why_not(block: Block) -> str | None:
    if block.marker == "skip":
        assert block.reason, f"{block.where}: 'docs-test: skip' needs a reason"
        return block.reason
    kinds = block.marker.split()
    if "gpu" in kinds:
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU"
    if "tensorrt" in kinds:
        from rope_export.tensorrt import tensorrt_unavailable

        return tensorrt_unavailable()
    return None


def _run(block: Block, folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    if block.language == "python":
        script = folder / f"snippet_{block.line}.py"
        script.write_text(block.code, encoding="utf-8")
        if block.marker == "fragment":
            compile(block.code, block.where, "exec")
            return subprocess.CompletedProcess([], 0, "", "")
        command = [sys.executable, script.name]
    elif block.marker == "fragment":
        command = ["bash", "-n", "-c", block.code]
    else:
        command = ["bash", "-e", "-o", "pipefail", "-c", "pip() { :; }\n" + block.code]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT)


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page, tmp_path):
    blocks = blocks_of(page)
    config = json.loads((ROOT / "models" / "qwen2-vl-7b.json").read_text(encoding="utf-8"))["config"]
    (tmp_path / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    skipped = []
    for block in blocks:
        why = _why_not(block)
        if why:
            skipped.append(f"{block.where} ({why})")
            continue
        done = _run(block, tmp_path)
        assert done.returncode == 0, (f"{block.where}: the {block.language} block exits {done.returncode}\n"
                                      f"{block.code}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    if skipped:
        print(f"{page}: not run here: {'; '.join(skipped)}")


def test_markers_are_read_and_blocks_found(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("text\n<!-- docs-test: skip needs the internet -->\n```bash\ncurl x\n```\n"
                    "```python\nprint(1)\n```\n```text\nnot code\n```\n<!-- docs-test: fragment -->\n```python\nx(\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = blocks_of("page.md")
    assert [(b.line, b.language, b.marker, b.reason) for b in found] == [
        (3, "bash", "skip", "needs the internet"), (6, "python", "", ""), (13, "python", "fragment", "")]
    with pytest.raises(SyntaxError):  # a fragment must still parse
        _run(found[2], tmp_path)
    assert _run(found[1], tmp_path).stdout == "1\n"


def test_every_file_the_docs_and_code_name_exists():
    """A test file, tool or doc named in prose (README, docs, CONTRIBUTING, the package's
    comments, tools/) exists: moved files leave no stale pointers behind."""
    named = re.compile(r"\b((?:tests|tools|docs|benchmarks/results)/[\w./-]+\.(?:py|md|sh|json|txt))\b")
    sources = [ROOT / p for p in PAGES] + sorted((ROOT / "rope_export").rglob("*.py")) + sorted((ROOT / "tools").glob("*"))
    missing = sorted({f"{src.relative_to(ROOT)}: {m}" for src in sources if src.is_file()
                      for m in named.findall(src.read_text(encoding="utf-8"))
                      if not (ROOT / m).exists() and not re.search(r"(?:/|_)(?:X|SUB)(?:/|\.)", m)})  # CONTRIBUTING's patterns
    assert not missing, missing
