"""Fused kernels. Importing this package needs nothing beyond torch; Triton is imported when
a kernel runs."""

from __future__ import annotations

import os

import torch

__all__ = ["rotary_triton", "triton_available"]


def triton_available(device: torch.device | str) -> str | None:
    """None when the Triton kernel can run on ``device``, else the reason it cannot."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install triton)"
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1"
    if torch.device(device).type != "cuda" and not interpret:
        return "the Triton kernel runs on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1)"
    return None


@torch.library.custom_op("rope_export::rotary_triton", mutates_args=())
def rotary_triton(q: torch.Tensor, k: torch.Tensor, position_ids: torch.Tensor, inv_freq: torch.Tensor,
                  axis_of_pair: torch.Tensor, interleaved: bool, rotary_dim: int,
                  attention_scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused kernel as a torch op: q [B,Hq,S,D], k [B,Hk,S,D], position_ids [A,B,S] ->
    (q_rot, k_rot), new tensors of the same shapes and dtype."""
    from .triton_rope import rope_triton

    return rope_triton(q, k, position_ids, inv_freq, axis_of_pair, interleaved=interleaved, rotary_dim=rotary_dim,
                       attention_scaling=attention_scaling)


@rotary_triton.register_fake
def _(q, k, position_ids, inv_freq, axis_of_pair, interleaved, rotary_dim, attention_scaling):
    return torch.empty_like(q), torch.empty_like(k)
