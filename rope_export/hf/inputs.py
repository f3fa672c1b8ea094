"""The inputs export-hf traces and checks: a wrapper module per model family, its example
inputs and dynamic axes, and the cases (seen and unseen shapes) with transformers' reference
outputs."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .adapters import rotary_kind
from .tables import has_table_attentions
from .vision_grid import GridEncoder

__all__ = ["example_inputs", "reference_cases", "EXPORT_GRID", "UNSEEN_GRIDS"]


class _Text(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                          use_cache=False).last_hidden_state


class _Vision(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *inputs):
        return self.model(*inputs).last_hidden_state


def _input_family(model: nn.Module) -> str:
    """The input family, read off the model's rotary module (`patch.rotary_kind`)."""
    for module in model.modules():
        cls = type(module).__name__
        if "Rotary" in cls:
            kind = rotary_kind(module, getattr(model, "config", None))[0]
            if kind == "vision_hw":  # same rotary, different inputs
                return "pixtral" if cls.startswith("Pixtral") else "qwen_vision"
            return kind
    if has_table_attentions(model):  # GPT-J: sinusoid tables in its attentions (patch checks them)
        return "text"
    raise ValueError(f"{type(model).__name__} has no rotary module")


def example_inputs(model: nn.Module, *, batch: int = 2, seq: int = 9, seed: int = 0):
    """(wrapper module, input tuple, input names, dynamic axes) for ``model``.

    Text: ``input_ids`` [B, S], ``attention_mask`` [B, S] (ones) and ``position_ids`` ([B, S],
    or [3, B, S] with three different streams for M-RoPE), B and S dynamic. Qwen-VL vision:
    a `GridEncoder` (the grid-dependent tensors as inputs, the patch count dynamic) on a
    non-square image. Pixtral and Llama 4 vision: one image at a fixed size (non-square for
    Pixtral, the configured size for Llama 4), static shapes.
    """
    g = torch.Generator().manual_seed(seed)
    kind, cfg = _input_family(model), model.config
    if kind in ("text", "mrope", "complex"):
        ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
        steps = torch.arange(seq) + int(torch.randint(0, 50, (1,), generator=g))
        mask = torch.ones(batch, seq, dtype=torch.int64)
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
        if kind != "mrope":
            pos = steps.expand(batch, seq).contiguous()
            axes["position_ids"] = {0: "batch", 1: "sequence"}
        else:  # t, h, w streams as an image grid gives them
            pos = torch.stack([steps, steps // 3, steps % 4])[:, None].expand(3, batch, seq).contiguous()
            axes["position_ids"] = {1: "batch", 2: "sequence"}
        return _Text(model), (ids, mask, pos), ["input_ids", "attention_mask", "position_ids"], axes
    if kind == "llama4_vision":
        pixels = torch.randn(1, cfg.num_channels, cfg.image_size, cfg.image_size, generator=g)
        return _Vision(model), (pixels,), ["pixel_values"], {}
    patch = int(cfg.patch_size)
    if kind == "pixtral":
        pixels = torch.randn(1, cfg.num_channels, 4 * patch, 3 * patch, generator=g)
        return _Vision(model), (pixels,), ["pixel_values"], {}
    wrapper = GridEncoder(model)
    merge = wrapper.params["spatial_merge_size"]
    args = wrapper.example_args(EXPORT_GRID * [1, merge, merge], seed=seed)
    return wrapper, args, wrapper.input_names, dict(zip(wrapper.input_names, wrapper.dynamic_shapes()))


# Qwen-VL vision, in merged blocks (x spatial_merge_size): the traced grid, then two unseen ones,
# one with edge windows and one with a 2-frame video beside an image (several segments).
EXPORT_GRID = np.array([[1, 4, 6]])
UNSEEN_GRIDS = (np.array([[1, 5, 7]]), np.array([[2, 3, 4], [1, 7, 2]]))


def reference_cases(model: nn.Module, wrapper, args, axes, seed: int) -> list:
    """[(label, inputs, reference outputs)]: the export inputs and, where shapes are dynamic,
    unseen ones; references from the unpatched model (Qwen-VL vision: its own forward)."""
    with torch.no_grad():
        if isinstance(wrapper, GridEncoder):
            merge = [1, wrapper.params["spatial_merge_size"], wrapper.params["spatial_merge_size"]]
            out = []
            for i, blocks in enumerate((EXPORT_GRID, *UNSEEN_GRIDS)):
                grid = blocks * merge
                case = args if i == 0 else wrapper.example_args(grid, seed=seed + i)
                out.append((f"grid {grid.tolist()}", case, wrapper.reference(case[0], grid)))
            return out
        cases = [args] + ([example_inputs(model, batch=3, seq=13, seed=seed + 1)[1]] if axes else [])
        return [(str(tuple(case[0].shape)), case, (wrapper(*case),)) for case in cases]
