"""Print docs/export.md's node-count table: node count per preset, form and dtype.

    python tools/node_counts.py            # markdown table on stdout
"""

from __future__ import annotations

import collections
import sys
import tempfile

import onnx

import rope_export as rx


def label(spec) -> str:
    sc = spec.scaling_dict
    kind = spec.length_rule.kind if spec.length_rule else sc.get("rope_type", "default")
    if spec.num_axes == 3:
        what = ("interleaved " if sc.get("mrope_interleaved") else "") + f"M-RoPE {sc.get('mrope_section')}"
    elif spec.num_axes == 2:
        what = f"2D, {sc.get('frequencies')} frequencies"
    else:
        what = "1D" + (f", partial {spec.rotary_dim}/{spec.head_dim}" if spec.rotary_dim < spec.head_dim else "")
    extra = "" if kind in ("default", "axial") else f", {kind}"
    return f"{what}, {spec.layout}{extra}"


def main() -> int:
    forms = [("fused", 23, "float32"), ("fused", 23, "float16"), ("decomposed", 17, "float32")]
    print("| preset | variant | " + " | ".join(f"{f} opset {o} {d}" for f, o, d in forms) + " | fused ops (float32) |")
    print("|---|---|" + "---|" * (len(forms) + 1))
    with tempfile.TemporaryDirectory() as tmp:
        for name in rx.list_presets():
            spec = rx.load_preset(name)
            counts, ops = [], ""
            for form, opset, dtype in forms:
                model = onnx.load(rx.export_onnx(spec, f"{tmp}/m.onnx", opset=opset, form=form, dtype=dtype))
                counts.append(str(len(model.graph.node)))
                if form == "fused" and dtype == "float32":
                    hist = collections.Counter(n.op_type for n in model.graph.node)
                    ops = ", ".join(f"{op} {n}" if n > 1 else op for op, n in sorted(hist.items()))
            variant = label(spec)
            print(f"| {name} | {variant} | " + " | ".join(counts) + f" | {ops} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
