"""Tests of rope_export.config_file: loading config.json files (paths, folders, bad files) and per-layer blocks."""

from __future__ import annotations

import json
import os

import pytest

import rope_export as rx
from rope_export.cli import main


def test_from_hf_config_reads_a_file(tmp_path):
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(rx.preset_info("llama-3.1-8b")["config"]))
    assert rx.RopeSpec.from_hf_config(path).inv_freq == rx.load_preset("llama-3.1-8b").inv_freq
    assert rx.RopeSpec.from_hf_config(str(tmp_path)).inv_freq == rx.load_preset("llama-3.1-8b").inv_freq
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        rx.RopeSpec.from_hf_config(path)


BASE = {"hidden_size": 256, "num_attention_heads": 4, "max_position_embeddings": 512}


def test_config_files_that_are_not_configs(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        with pytest.raises(ValueError, match="not a regular file"):
            rx.RopeSpec.from_hf_config(path)
    preset_file = os.path.join(os.path.dirname(rx.__file__), "..", "models", "mistral-7b.json")
    if os.path.exists(preset_file):
        with pytest.raises(ValueError, match="preset file"):
            rx.RopeSpec.from_hf_config(preset_file)
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**BASE, "model_type": "llama"}))
    assert main(["export", "--hf-config", str(folder), "--out", str(tmp_path / "m.onnx"), "--form", "fused"]) == 0
    # Named as the config names itself, never by its folder (a hub snapshot's folder is a hash).
    assert "wrote" in capsys.readouterr().out and rx.export.read_graph(tmp_path / "m.onnx").spec.name == "llama"
    (folder / "config.json").write_text(json.dumps({**BASE, "model_type": "llama", "_name_or_path": "org/My-Llama/"}))
    assert rx.RopeSpec.from_hf_config(str(folder)).name == "My-Llama"
    assert rx.RopeSpec.from_hf_config(str(folder), name="mine").name == "mine"


def test_malformed_per_layer_rope_parameters_name_the_layer_type():
    base = {"model_type": "gemma3_text", "hidden_size": 256, "num_attention_heads": 4, "head_dim": 64,
            "layer_types": ["sliding_attention", "full_attention"]}
    full = {"rope_type": "default", "rope_theta": 1e6}
    cases = {
        r"rope_parameters\['sliding_attention'\].*int 5": {"full_attention": full, "sliding_attention": 5},
        r"every layer type's entry is null.*full_attention": {"full_attention": None, "sliding_attention": None},
        r"mixes layer-type entries \(full_attention\) with flat fields \(rope_theta=": {"rope_theta": 1e4, "full_attention": full},
    }
    for message, params in cases.items():
        with pytest.raises(ValueError, match=message):
            rx.RopeSpec.from_hf_config({**base, "rope_parameters": params}, layer_type="full_attention")
    with pytest.raises(ValueError, match=r"none of which the config's layer_types \(full_attention, sliding_attention\)"):
        rx.RopeSpec.from_hf_config({**base, "rope_parameters": {"global": full, "local": full}}, layer_type="global")
    undeclared = {k: v for k, v in base.items() if k != "layer_types"}
    with pytest.raises(ValueError, match=r"full_attention.*sliding_attention=5"):
        rx.RopeSpec.from_hf_config({**undeclared, "rope_parameters": {"full_attention": full, "sliding_attention": 5}},
                                   layer_type="full_attention")


@pytest.mark.hf
def test_a_transformers_config_object_reads_as_its_config_json():
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2VLConfig(text_config={"hidden_size": 512, "num_attention_heads": 4})
    assert rx.RopeSpec.from_hf_config(config) == rx.RopeSpec.from_hf_config(config.to_dict())
    with pytest.raises(ValueError, match="config must be a dict, a transformers config or a config.json path, got int"):
        rx.RopeSpec.from_hf_config(5)
