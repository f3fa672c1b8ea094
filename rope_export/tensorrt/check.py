"""A deployment gate: does TensorRT parse and build this graph, and does the rotary become
TensorRT's native ``ROTARY_EMBEDDING`` layer as the graph's form promises?

    results = check_graphs(["rope.onnx"], compute_capability="SM89")
    print(format_checks(results)); exit(0 if all(r.passed for r in results) else 1)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..export.metadata import read_graph
from .engine import Build, Profile, parse_and_build

__all__ = ["TrtCheck", "check_graphs", "format_checks", "expected_rotary_layers"]

# Native rotary layers a graph of each form must give (two: q and k). The plugin form without
# the plugin registered expands its local function, whose body is the standard op; with it, the
# nodes become plugin layers instead.
_ROTARY_LAYERS = {"fused": 2, "table": 2, "contrib": 2, "plugin": 2, "decomposed": 0}
_PLUGIN_LAYERS = ("PLUGIN", "PLUGIN_V2", "PLUGIN_V3")


def expected_rotary_layers(form: str, plugin: bool = False) -> int | None:
    """ROTARY_EMBEDDING layers a ``form`` graph must become (None: unknown form, not checked)."""
    if plugin and form == "plugin":
        return 0
    return _ROTARY_LAYERS.get(form)


@dataclass
class TrtCheck:
    build: Build
    form: str
    expected_rotary: int | None
    plugin_layers: int

    @property
    def problems(self) -> list[str]:
        out = []
        if not self.build.parsed:
            out.append("TensorRT's ONNX parser refused it: " + "; ".join(self.build.errors))
        elif not self.build.built:
            out.append("the engine build failed: " + ("; ".join(self.build.errors) or "see the log"))
        if self.build.parsed and self.expected_rotary is not None and self.build.rotary_layers != self.expected_rotary:
            out.append(f"{self.build.rotary_layers} native ROTARY_EMBEDDING layers, the {self.form} form must give "
                       f"{self.expected_rotary}")
        return out

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"path": self.build.path, "passed": self.passed, "tensorrt": self.build.tensorrt, "target": self.build.target,
                "form": self.form, "parsed": self.build.parsed, "built": self.build.built,
                "rotary_layers": self.build.rotary_layers, "expected_rotary_layers": self.expected_rotary,
                "plugin_layers": self.plugin_layers, "layers": dict(self.build.layers), "warnings": self.build.warnings,
                "errors": self.build.errors, "problems": self.problems}


def check_graphs(paths, *, compute_capability: str | None = None, plugin: bool = False,
                 profile: Profile = Profile((1, 1, 4), (1, 64, 512))) -> list[TrtCheck]:
    """Parse and build each graph (nothing is written) and hold its layers to its form.

    Raises:
        RuntimeError: no TensorRT builder (with the install hint); InputError: a file that is
            missing or not ONNX.
    """
    out = []
    for path in paths:
        form = read_graph(path).form
        expected = expected_rotary_layers(form, plugin)
        serving = _serving(path)
        if serving is not None:  # export-hf --with-past: q and k of every layer, where fused
            form, expected = "with-past", 2 * serving["layers"] if serving.get("fused") else None
        build = parse_and_build(path, profile=profile, plugin=plugin, compute_capability=compute_capability)
        plugins = sum(build.layers.get(t, 0) for t in _PLUGIN_LAYERS)
        out.append(TrtCheck(build, form, expected, plugins))
    return out


def _serving(path) -> dict | None:
    from ..serving import read_serving

    try:
        return read_serving(path)
    except ValueError:
        return None


def format_checks(results: list[TrtCheck]) -> str:
    """One block per graph: verdict, TensorRT and target, rotary layers, histogram, warnings."""
    lines = []
    for r in results:
        b = r.build
        verdict = "PASS" if r.passed else "FAIL"
        expected = "" if r.expected_rotary is None else f" (expected {r.expected_rotary})"
        lines.append(f"{verdict}: {b.path} [{r.form}] {b.tensorrt}, target {b.target}: parsed {b.parsed}, built {b.built}, "
                     f"ROTARY_EMBEDDING {b.rotary_layers}{expected}, plugin layers {r.plugin_layers}")
        lines.append("  layers: " + ", ".join(f"{k} {v}" for k, v in sorted(b.layers.items())))
        lines.extend(f"  warning: {w}" for w in b.warnings)
        lines.extend(f"  problem: {p}" for p in r.problems)
    return "\n".join(lines)
