"""Host-side position builders for the models whose position rules cannot be exported.

These run before the graph (in the pre-processor or the serving loop) and produce the
``position_ids`` the rotary module and the exported graphs take as given:
``[A, B, S]`` int64, axis 0 first.

Example (one 4x6-patch image, merged 2x2, between two text runs):
    >>> import torch
    >>> from rope_export.positions import mrope_position_ids
    >>> types = torch.tensor([[0, 0] + [1] * 6 + [0, 0]])
    >>> mrope_position_ids(types, image_grid_thw=torch.tensor([[1, 4, 6]]))[:, 0].tolist()
    [[0, 1, 2, 2, 2, 2, 2, 2, 5, 6], [0, 1, 2, 2, 2, 3, 3, 3, 5, 6], [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]]
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["mrope_position_ids", "vision_position_ids", "patch_grid_positions"]

TEXT, IMAGE, VIDEO = 0, 1, 2


def _grid_block(start: int, t: int, h: int, w: int, time_interval: float) -> torch.Tensor:
    # [3, t*h*w]: temporal index scaled by the interval, rows and columns offset by start.
    tt = (torch.arange(t) * time_interval).long() + start
    hh = torch.arange(h) + start
    ww = torch.arange(w) + start
    grid = torch.meshgrid(tt, hh, ww, indexing="ij")
    return torch.stack(grid, dim=0).reshape(3, -1)


def mrope_position_ids(
    token_types: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    *,
    spatial_merge_size: int = 2,
    attention_mask: torch.Tensor | None = None,
    video_time_intervals: Sequence[float] | None = None,
) -> torch.Tensor:
    """Qwen2-VL / Qwen2.5-VL style 3D (t, h, w) positions for a mixed text/image/video sequence.

    Args:
        token_types: ``[B, S]`` ints, 0 = text, 1 = image token, 2 = video token.
        image_grid_thw, video_grid_thw: ``[N, 3]`` patch grids (before merging), in sequence order.
        spatial_merge_size: patches merged per side into one LLM token (2 for Qwen2-VL family).
        attention_mask: optional ``[B, S]``; masked slots get position 0 and are skipped.
        video_time_intervals: per video, the temporal step (Qwen2.5-VL: tokens_per_second *
            seconds per temporal grid); default 1.
    Returns:
        int64 ``[3, B, S]``. Text runs advance all three axes together; a vision block starts
        at the running position, its t/h/w follow the (merged) grid, and the next run starts
        one past the largest position of the block, ``max(t, h, w) + 1``: the rule the models
        were trained with (Qwen's reference code, vLLM, transformers <= 5.2). transformers 5.23
        starts it at ``start + max(h, w) / merge`` instead, which differs after a video with
        more temporal steps than merged rows or columns (transformers issue 45381).
    Raises:
        ValueError: when the tokens ask for more grids than given, or shapes disagree.
    """
    if token_types.dim() != 2:
        raise ValueError(f"token_types must be [B, S], got shape {tuple(token_types.shape)}")
    grids = {IMAGE: list(image_grid_thw.tolist()) if image_grid_thw is not None else [],
             VIDEO: list(video_grid_thw.tolist()) if video_grid_thw is not None else []}
    intervals = list(video_time_intervals) if video_time_intervals is not None else [1.0] * len(grids[VIDEO])
    if len(intervals) != len(grids[VIDEO]):
        raise ValueError("video_time_intervals must give one value per video grid")
    used = {IMAGE: 0, VIDEO: 0}
    batch, seq = token_types.shape
    out = torch.zeros(3, batch, seq, dtype=torch.int64)
    for b in range(batch):
        keep = attention_mask[b].bool() if attention_mask is not None else torch.ones(seq, dtype=torch.bool)
        types = token_types[b][keep].tolist()
        blocks, pos, i = [], 0, 0
        while i < len(types):
            j = i
            while j < len(types) and types[j] == types[i]:
                j += 1
            kind = types[i]
            if kind == TEXT:
                blocks.append(torch.arange(j - i).expand(3, -1) + pos)
                pos += j - i
            elif kind in (IMAGE, VIDEO):
                if used[kind] >= len(grids[kind]):
                    raise ValueError(f"token_types has more {'image' if kind == IMAGE else 'video'} runs than grids given")
                t, h, w = (int(v) for v in grids[kind][used[kind]])
                interval = intervals[used[kind]] if kind == VIDEO else 1.0
                used[kind] += 1
                h, w = h // spatial_merge_size, w // spatial_merge_size
                block = _grid_block(pos, t, h, w, interval)
                if block.shape[1] != j - i:
                    raise ValueError(f"a vision run of {j - i} tokens does not match its grid ({t}x{h}x{w} merged tokens)")
                blocks.append(block)
                pos = int(block.max()) + 1
            else:
                raise ValueError(f"token_types: unknown type {kind} (0 text, 1 image, 2 video)")
            i = j
        if blocks:
            out[:, b, keep] = torch.cat(blocks, dim=1)
    return out


def vision_position_ids(grid_thw: torch.Tensor, spatial_merge_size: int = 1) -> torch.Tensor:
    """Qwen-VL vision encoder (row, column) positions, in the encoder's token order.

    Patches are ordered block-major over ``merge x merge`` windows (so a merge window's
    patches are adjacent), and repeated for each temporal slice.

    Args:
        grid_thw: ``[N, 3]`` (t, h, w) patch grids of the images/videos in the batch.
        spatial_merge_size: the vision config's ``spatial_merge_size``.
    Returns:
        int64 ``[2, 1, sum(t*h*w)]`` (rows, columns), ready for a 2-axis spec.
    """
    rows, cols = [], []
    for t, h, w in grid_thw.tolist():
        m = spatial_merge_size
        if h % m or w % m:
            raise ValueError(f"grid {h}x{w} is not divisible by spatial_merge_size {m}")
        hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        block = (h // m, m, w // m, m)
        rows.append(hh.reshape(block).transpose(1, 2).flatten().repeat(t))
        cols.append(ww.reshape(block).transpose(1, 2).flatten().repeat(t))
    return torch.stack([torch.cat(rows), torch.cat(cols)])[:, None, :]


def patch_grid_positions(height: int, width: int, *, offset: int = 0, cls_token: str | None = None) -> torch.Tensor:
    """Row-major (row, column) positions of an ``height x width`` patch grid.

    Args:
        offset: added to both coordinates (Llama 4 vision counts patches from 1).
        cls_token: None, "first" or "last": adds a class token at position (0, 0),
            which the rotation leaves untouched when ``offset >= 1`` (Llama 4 vision: "last").
    Returns:
        int64 ``[2, 1, N]``, N = height * width (+1 with a class token).

    >>> patch_grid_positions(2, 2, offset=1, cls_token="last")[:, 0].tolist()
    [[1, 1, 2, 2, 0], [1, 2, 1, 2, 0]]
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    rows, cols = torch.meshgrid(torch.arange(height) + offset, torch.arange(width) + offset, indexing="ij")
    pos = torch.stack([rows.flatten(), cols.flatten()])
    if cls_token is not None:
        if cls_token not in ("first", "last"):
            raise ValueError(f"cls_token must be None, 'first' or 'last', got {cls_token!r}")
        zero = torch.zeros(2, 1, dtype=torch.int64)
        pos = torch.cat([zero, pos] if cls_token == "first" else [pos, zero], dim=1)
    return pos[:, None, :]
