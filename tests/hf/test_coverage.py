"""Tests of rope_export.hf.coverage: every rotary architecture of the installed transformers is exact or refused, never wrong."""

# The verified table is what the probe proves; a release that predates a family's rule is superseded.

from __future__ import annotations

import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf

import rope_export as rx  # noqa: E402
from rope_export.architectures import VERIFIED_TEXT, VERIFIED_VISION, release_key, superseded  # noqa: E402
from rope_export.hf.coverage import coverage, probe_model_type, probed_types, rule_exact_types, summary  # noqa: E402
from tests.helpers import probe_rows  # noqa: E402


# Accepted rows this generic probe cannot run, each checked by a test of its own (none today).
CHECKED_ELSEWHERE: dict = {}


@pytest.fixture(scope="module")
def rows():
    transformers.logging.set_verbosity_error()
    return coverage()


def test_no_row_is_silently_wrong(rows):
    """0 wrong, every unprobed row stated, >= 95% exact on the installed release (5.23: 356 of
    372 rows; 5.25: 363 of 389); a row whose release predates the rule rope_export follows
    (`Family.since`) is "superseded" only where the family says so."""
    counts = summary(rows)
    wrong = [(r.model_type, r.part, r.layer_type, r.detail) for r in rows if r.status == "wrong"]
    assert not wrong, wrong
    assert counts["exact"] >= 0.95 * len(rows), counts
    for r in rows:
        assert r.status in {"exact", "refused", "superseded", "unprobed"}, r
        assert r.model_type and r.part and r.rotary_class, r  # part: text, vision or the config key (encoder_config, ...)
        if r.status == "refused":  # a refusal always says why, in the words from_hf_config raised
            assert len(r.detail.strip()) >= 20, r
        if r.status == "unprobed":
            assert (r.model_type, r.part) in CHECKED_ELSEWHERE, (r.model_type, r.part, r.detail)
        if r.status == "superseded":
            assert superseded(r.config_type.partition(":")[2], transformers.__version__), r


def test_verified_table_is_what_the_probe_proves(rows):
    """On the installed release, every verified type it has is proven exact (superseded ones
    aside), every type proven exact is verified, and a release recorded for a type is one the
    probe proves it on."""
    release = transformers.__version__
    for kind, table in (("text", VERIFIED_TEXT), ("vision", VERIFIED_VISION)):
        proved, probed = set(rule_exact_types(rows, kind)), probed_types(rows, kind)
        unproved = {t for t in set(table) & probed - proved if not superseded(t, release)}
        assert not unproved, f"{kind}: verified yet not exact on transformers {release}: {sorted(unproved)}"
        assert proved - set(table) == set(), f"{kind}: newly exact, run tools/hf_coverage.py --write-verified: {sorted(proved - set(table))}"
        recorded = {t for t, releases in table.items() if release in releases}
        assert recorded & probed <= proved, sorted(recorded & probed - proved)
    for name, releases in VERIFIED_TEXT.items():
        assert releases and all(release_key(r) for r in releases), (name, releases)


@pytest.mark.parametrize("model_type", ["glm4", "cohere", "deepseek_v2", "deepseek_v3", "glm4_moe_lite", "longcat_flash",
                                        "gemma3", "jetmoe", "qwen3_5", "nanochat", "deepseek_v32"])
def test_families_the_issue_named(model_type):
    """GPT-J-style pairing (GLM, Cohere), MLA (DeepSeek V2's complex pairs, V3's and
    LongCat's de-interleaving), per-layer types (Gemma 3), kv_channels (JetMoE), M-RoPE with
    partial rotary (Qwen3.5): exact; NanoChat's negative rotation: refused with the reason;
    DeepSeek V3.2's two pairings from one rotary: one spec per use (attention, indexer)."""
    got = {(r.layer_type, r.status) for r in probe_model_type(model_type) if r.part == "text"}
    if model_type == "nanochat":
        assert {s for _, s in got} == {"refused"}, got
    else:
        assert {s for _, s in got} == {"exact"}, got
    if model_type == "gemma3":
        assert {lt for lt, _ in got} == {"full_attention", "sliding_attention"}
    if model_type == "deepseek_v32":  # one spec per use of its one rotary
        assert {lt for lt, _ in got} == {"attention", "indexer"}


@pytest.mark.parametrize("model_type", ["kimi_k25_vision", "step3p5_vision", "mlcd_vision_model", "paddleocr_vl", "qwen3_omni_moe_text",
                                        "glm4v_moe_text", "mellum", "beam", "step3p7", "qwen4_exp_text"])
def test_families_added_with_the_vision_grid_work(model_type):
    """Kimi-K2.5 vision (column and row pairs zipped), Step3 vision (columns first),
    PaddleOCR-VL's default sections, Qwen3-Omni and GLM-4.5V (published head_dim), layer types
    the default config leaves unused (Mellum) or without a rotary (Beam), a composite config's
    layer types (Step3p7), interleaved sections not summing to the pairs (Qwen4-Exp): every row
    exact against transformers' own code."""
    rows = probe_model_type(model_type)
    assert rows and {r.status for r in rows} == {"exact"}, [(r.part, r.layer_type, r.status, r.detail) for r in rows]


def test_coverage_tool_writes_a_table(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "..", "..", "tools", "hf_coverage.py"),
                          "llama", "glm4", "nanochat"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    table = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in {"llama", "glm4", "nanochat"}:
            table.setdefault(cells[0], set()).add(cells[4])
    # each model type's row holds its own status, the same one the library call gives
    assert table == {"llama": {"exact"}, "glm4": {"exact"}, "nanochat": {"refused"}}, out.stdout[-3000:]
    assert "0 wrong" in out.stdout


def test_a_release_that_predates_the_rule_is_superseded_and_refused_by_the_patch():
    """HY-V4: transformers 5.25 rotates DeepSeek's interleaved pairs written de-interleaved,
    5.23 and 5.24 rotate half pairs. rope_export follows 5.25 (Family.since): on it the probe is
    exact and the patch holds; on an older release the probe says "superseded" and the patch
    refuses, as its check against that release's code must."""
    from rope_export.architectures import family_of

    assert family_of("hy_v4").since == "5.25.0" and rx.RopeSpec.from_hf_config(
        transformers.AutoConfig.for_model("hy_v4").to_dict()).layout == "interleaved_to_half"
    (row,) = [r for r in probe_model_type("hy_v4") if r.part == "text"]
    cfg = transformers.AutoConfig.for_model("hy_v4", num_hidden_layers=1, vocab_size=64, first_k_dense_replace=1,
                                            pad_token_id=None, bos_token_id=None, eos_token_id=None)
    model = transformers.AutoModel.from_config(cfg).eval()
    if superseded("hy_v4", transformers.__version__):
        assert row.status == "superseded", row
        with pytest.raises(ValueError, match="rotates differently"):
            rx.hf.patch(model)
    else:
        assert row.status == "exact", row
        ids = torch.randint(0, 64, (1, 6))
        with torch.no_grad():
            want = model(ids).last_hidden_state
            with rx.hf.patch(model):
                got = model(ids).last_hidden_state
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_llama4_vision_is_probed_through_its_own_complex_code():
    assert probe_rows("llama4_vision_model")[("vision", None)][0] == "exact"
