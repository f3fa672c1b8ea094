"""Qwen-VL vision encoders (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE) exported with a dynamic image grid.

transformers derives the rotary positions, the attention segments (``cu_seqlens``), Qwen2.5's
window order and Qwen3's position-table resampling from ``grid_thw`` with data-dependent Python
(``grid_thw.tolist()``, ``repeat_interleave``), which stops ``torch.export``. Its encoders also
accept each of those tensors precomputed (``transformers.vision_utils``). `GridEncoder` makes them
graph inputs, computed on the host by `rope_export.positions.vision_grid_inputs` (numpy only),
and runs attention over the packed patches as one masked ``scaled_dot_product_attention`` whose
block-diagonal mask is built in the graph from ``cu_seqlens``: exact (each patch attends to its
own frame or window, as transformers' per-segment loop does), at O(P^2) memory for P patches.

Graph inputs, P patches, M = spatial_merge_size (2), F = frames:
    pixel_values      float32 [P, C*T*patch^2]   the processor's flattened patches
    position_ids      int64   [P, 2]             (row, column) per patch
    cu_seqlens        int32   [F + 1]            cumulative patches per frame
    window_index      int64   [P / M^2]          Qwen2.5-VL only
    cu_window_seqlens int32   [windows + 1]      Qwen2.5-VL only
    interp_indices    int64   [P, 4]             Qwen3-VL only
    interp_weights    float32 [P, 4]             Qwen3-VL only
Outputs: ``image_embeds`` [P / M^2, out_hidden] (the merger's output, in image order) and, for
Qwen3-VL, one ``deepstack_<i>`` [P / M^2, out_hidden] per deepstack layer the model has.

Example:
    >>> enc = GridEncoder(model.visual)                       # doctest: +SKIP
    >>> args = enc.example_args([[1, 8, 12]])                  # doctest: +SKIP
    >>> embeds = enc(*args)[0]                                # doctest: +SKIP
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..positions import vision_grid_inputs

__all__ = ["GRID_ENCODERS", "GridEncoder", "grid_params", "PACKED_ATTENTION", "METADATA_KEY"]

GRID_ENCODERS = frozenset({"Qwen2VisionTransformerPretrainedModel", "Qwen2_5_VisionTransformerPretrainedModel",
                           "Qwen3VLVisionModel", "Qwen3VLMoeVisionModel"})
# transformers hands cu_seqlens to an attention implementation only when its name contains
# "flash" (`is_flash_attention_requested`); every other name gets the tolist() split.
PACKED_ATTENTION = "rope_export_flash_packed"
METADATA_KEY = "rope_export.vision_grid"  # the vision_grid_inputs keyword arguments, JSON
INPUT_ORDER = ("position_ids", "cu_seqlens", "window_index", "cu_window_seqlens", "interp_indices", "interp_weights")


def _packed_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                      cu_seq_lens_q=None, **kwargs):
    # query/key/value [1, H, P, D]; patch i sees patch j iff both lie in one cu_seqlens segment.
    n = query.shape[2]
    segment = (torch.arange(n, device=query.device)[:, None] >= cu_seq_lens_q[None, 1:]).sum(-1)
    mask = segment[:, None] == segment[None, :]
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, _packed_attention)


def grid_params(visual: nn.Module) -> dict:
    """The `vision_grid_inputs` keyword arguments of a transformers Qwen-VL vision encoder,
    read off the module (merge size, Qwen2.5's window, Qwen3's position table)."""
    if type(visual).__name__ not in GRID_ENCODERS:
        raise ValueError(f"{type(visual).__name__} is not a Qwen-VL vision encoder with grid inputs "
                         f"({', '.join(sorted(GRID_ENCODERS))})")
    params = {"spatial_merge_size": int(visual.spatial_merge_size)}
    if hasattr(visual, "window_size"):
        params.update(window_size=int(visual.window_size), patch_size=int(visual.patch_size))
    if hasattr(visual, "num_grid_per_side"):
        params.update(num_grid_per_side=int(visual.num_grid_per_side), interpolation=str(visual.interpolation_mode),
                      align_corners=bool(visual.interpolation_align_corners))
    return params


@contextlib.contextmanager
def _attention(config, name: str):
    saved = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


class GridEncoder(nn.Module):
    """A Qwen-VL vision encoder whose grid-dependent tensors are inputs (see the module doc)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.params = grid_params(visual)
        self.visual = visual
        _register()
        m = self.params["spatial_merge_size"]
        self.input_names = ["pixel_values"] + [n for n in INPUT_ORDER if n in self._host([[1, m, m]])]
        deepstack = sum(i < len(visual.blocks) for i in getattr(visual, "deepstack_visual_indexes", ()) or ())
        self.output_names = ["image_embeds"] + [f"deepstack_{i}" for i in range(deepstack)]

    def _host(self, grid) -> dict:
        return vision_grid_inputs(grid, **self.params)

    def forward(self, pixel_values, position_ids, cu_seqlens, extra_0=None, extra_1=None):
        """Inputs in `input_names` order (the extras: Qwen2.5's window or Qwen3's table);
        returns the `output_names` tensors."""
        given = dict(zip(self.input_names[1:], (position_ids, cu_seqlens, extra_0, extra_1)))
        # max_seqlen is only read by real flash kernels; a constant keeps .item() out of the graph.
        with _attention(self.visual.config, PACKED_ATTENTION):
            out = self.visual(pixel_values, grid_thw=None, max_seqlen=0, max_window_seqlen=0, **given)
        return self._outputs(out)

    def reference(self, pixel_values, grid_thw) -> tuple:
        """The same outputs from transformers' own forward: its grid bookkeeping and attention."""
        return self._outputs(self.visual(pixel_values, torch.as_tensor(np.asarray(grid_thw))))

    def _outputs(self, out) -> tuple:
        return (out.pooler_output, *(getattr(out, "deepstack_features", None) or ()))[:len(self.output_names)]

    def example_args(self, grid, seed: int = 0) -> tuple:
        """(pixel_values, host inputs...) for ``grid`` ([N, 3] (t, h, w) patch grids)."""
        host = self._host(grid)
        cfg = self.visual.config
        width = int(cfg.in_channels) * int(cfg.temporal_patch_size) * int(cfg.patch_size) ** 2
        patches = int(np.asarray(grid).prod(-1).sum())
        pixels = torch.randn(patches, width, generator=torch.Generator().manual_seed(seed))
        return (pixels, *(torch.from_numpy(host[n]) for n in self.input_names[1:]))

    def dynamic_shapes(self) -> tuple:
        """torch.export dims in input order: P = M^2 * blocks patches; segments, windows free."""
        blocks = torch.export.Dim("blocks", min=1)
        patches = self.params["spatial_merge_size"] ** 2 * blocks
        dims = {"pixel_values": {0: patches}, "position_ids": {0: patches}, "cu_seqlens": {0: torch.export.Dim("segments_1", min=2)},
                "window_index": {0: blocks}, "cu_window_seqlens": {0: torch.export.Dim("windows_1", min=2)},
                "interp_indices": {0: patches}, "interp_weights": {0: patches}}
        return tuple(dims[n] for n in self.input_names)
