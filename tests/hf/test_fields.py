"""Tests of rope_export.hf.fields: the config fields each family ignores or fills in, as the installed transformers proves."""

from __future__ import annotations

import pytest

from rope_export.architectures import VERIFIED_TEXT

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.hf


def test_field_facts_are_what_the_installed_transformers_proves():
    """Every ignored or self-filled field the probe finds on the installed release is recorded."""
    transformers = pytest.importorskip("transformers")
    from rope_export.architectures import FIELD_FACTS
    from rope_export.hf.fields import field_facts

    transformers.logging.set_verbosity_error()
    found = field_facts(sorted(VERIFIED_TEXT))
    missing = {t: {k: sorted(set(v) - set(FIELD_FACTS.get(t, {}).get(k, []))) for k, v in f.items()}
               for t, f in found.items()}
    missing = {t: f for t, f in missing.items() if any(f.values())}
    assert not missing, f"run tools/hf_coverage.py --write-verified: {missing}"
    assert len(found) >= 100, len(found)  # 158 types with a fact on transformers 5.25
