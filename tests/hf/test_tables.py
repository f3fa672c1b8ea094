"""Tests of rope_export.hf.tables: GPT-J and CodeGen sinusoid tables, patched and exported."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402


@pytest.mark.parametrize("model_type", ["gptj", "codegen"])
def test_gptj_sinusoid_tables_are_patched_and_exported(tmp_path, model_type):
    """GPT-J and CodeGen keep (sin, cos) in a sinusoid table: before transformers 5.25 one per
    attention, with no rotary module; from 5.25 in a rotary module returning (sin, cos). The
    patch checks the table against the config's spec either way, keeps the table, swaps
    apply_rotary_pos_emb(tensor, sin, cos); the export has RotaryEmbedding nodes (both
    exporters) and matches transformers."""
    import importlib

    from rope_export.hf.export import export_hf

    modeling = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(model_type, n_layer=1, n_embd=128, n_head=4, rotary_dim=16,
                                               vocab_size=100, n_positions=256)
    model = transformers.AutoModel.from_config(config).eval()
    ids = torch.randint(0, 100, (2, 9))
    original = modeling.apply_rotary_pos_emb
    table_module = next(m for _, m in model.named_modules() if isinstance(getattr(m, "embed_positions", None), torch.Tensor))
    rotary_module = "Rotary" in type(table_module).__name__  # transformers 5.25 and later
    with torch.no_grad():
        want = model(ids).last_hidden_state
        with rx.hf.patch(model) as p:
            assert modeling.apply_rotary_pos_emb is not original
            expected = "RotaryEmbedding" if rotary_module else "Attention"
            assert len(p.replaced) == 1 and p.replaced[0][1].endswith(expected), p.replaced
            assert p.replaced[0][2].layout == "interleaved" and p.replaced[0][2].rotary_dim == 16
            got = model(ids).last_hidden_state
    assert modeling.apply_rotary_pos_emb is original
    assert (want - got).abs().max() < 1e-5
    # A table edited by hand no longer follows the config: refused, nothing swapped.
    table_module.embed_positions.mul_(1.01)
    with pytest.raises(ValueError, match="differs from its config's rotary|sinusoid table differs"):
        rx.hf.patch(model)
    assert modeling.apply_rotary_pos_emb is original
    if model_type == "gptj":
        config = rx.preset_info("gpt-j-6b")["config"]
        for exporter in ("dynamo", "legacy"):
            report = export_hf(config, tmp_path / f"{exporter}.onnx", layers=1, exporter=exporter, compare_unpatched=False)
            assert report.passed and report.rotary_nodes == 2, report.summary()
