"""Tests of rope_export.spec: RopeSpec constructors, field checks, JSON round trip and hash."""

from __future__ import annotations

import dataclasses

import pytest

import rope_export as rx
from tests.helpers import all_specs


SPECS = all_specs()


IDS = [name for name, _ in SPECS]


def test_bad_specs_name_the_field():
    with pytest.raises(ValueError, match="head_dim must be even"):
        rx.RopeSpec.standard(63)
    with pytest.raises(ValueError, match="rotary_dim"):
        rx.RopeSpec(head_dim=64, rotary_dim=80, inv_freq=(1.0,) * 40)
    with pytest.raises(ValueError, match="sections"):
        rx.RopeSpec.mrope(128, [16, 24, 20])
    with pytest.raises(ValueError, match="inv_freq"):
        rx.RopeSpec(head_dim=8, rotary_dim=8, inv_freq=(1.0, 0.5))
    with pytest.raises(ValueError, match="axis_of_pair"):
        rx.RopeSpec(head_dim=4, rotary_dim=4, inv_freq=(1.0, 0.5), axis_of_pair=(0, 1))
    with pytest.raises(ValueError, match="layout"):
        rx.RopeSpec.standard(8, layout="neox")


@pytest.mark.parametrize("name,spec", SPECS[::2], ids=IDS[::2])
def test_spec_json_round_trip_and_hash(name, spec):
    again = rx.RopeSpec.from_dict(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    assert rx.RopeSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.head_dim = 2  # type: ignore[misc]


def test_constructors_name_an_odd_head_dim_first():
    with pytest.raises(ValueError, match="head_dim must be even, got 127"):
        rx.RopeSpec.mrope(127, sections=[16, 24, 24], theta=1e6)
    with pytest.raises(ValueError, match="head_dim must be a multiple of 4 for 2D RoPE, got 66"):
        rx.RopeSpec.axial_2d(66)
    with pytest.raises(ValueError, match="positive int"):
        rx.RopeSpec.standard(0)
