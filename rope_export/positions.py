"""Host-side position builders for the models whose position rules cannot be exported.

These run before the graph (in the pre-processor or the serving loop) and produce the
``position_ids`` the rotary module and the exported graphs take as given:
``[A, B, S]`` int64, axis 0 first. `vision_grid_inputs` builds every grid-dependent input of
an exported Qwen-VL vision encoder (`rope_export.hf.vision_grid`) with numpy alone: importing
this module imports no torch, so a serving process needs none.

Example (one 4x6-patch image, merged 2x2, between two text runs):
    >>> import torch
    >>> from rope_export.positions import mrope_position_ids
    >>> types = torch.tensor([[0, 0] + [1] * 6 + [0, 0]])
    >>> mrope_position_ids(types, image_grid_thw=torch.tensor([[1, 4, 6]]))[:, 0].tolist()
    [[0, 1, 2, 2, 2, 2, 2, 2, 5, 6], [0, 1, 2, 2, 2, 3, 3, 3, 5, 6], [0, 1, 2, 3, 4, 2, 3, 4, 5, 6]]
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # torch is imported by the functions that use it: vision_grid_inputs needs none
    import torch

__all__ = ["mrope_position_ids", "text_position_ids", "decode_position_ids", "vision_position_ids", "patch_grid_positions",
           "vision_grid_inputs"]

TEXT, IMAGE, VIDEO = 0, 1, 2


def _grid_block(start: int, t: int, h: int, w: int, time_interval: float) -> torch.Tensor:
    import torch

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
    return_deltas: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL / Qwen2.5-VL style 3D (t, h, w) positions for a mixed text/image/video sequence.

    Args:
        token_types: ``[B, S]`` ints, 0 = text, 1 = image token, 2 = video token.
        image_grid_thw, video_grid_thw: ``[N, 3]`` patch grids (before merging), in sequence order.
        spatial_merge_size: patches merged per side into one LLM token (2 for Qwen2-VL family).
        attention_mask: optional ``[B, S]``; masked slots get position 0 and are skipped.
        video_time_intervals: per video, the temporal step (Qwen2.5-VL: tokens_per_second *
            seconds per temporal grid); default 1.
        return_deltas: also return ``rope_deltas`` int64 ``[B]``: the largest position + 1
            minus S (padding included), which every decode step adds to its cache position
            (`decode_position_ids`); negative after an image, which takes fewer positions than
            tokens. S and the cache position count left padding (transformers counts neither:
            its deltas are larger by the padding, its decode positions the same).
    Returns:
        int64 ``[3, B, S]`` (and ``rope_deltas`` ``[B]`` when asked). Text runs advance all three axes together; a vision block starts
        at the running position, its t/h/w follow the (merged) grid, and the next run starts
        one past the largest position of the block, ``max(t, h, w) + 1``: the rule the models
        were trained with (Qwen's reference code, vLLM, transformers <= 5.2). transformers 5.23
        starts it at ``start + max(h, w) / merge`` instead, which differs after a video with
        more temporal steps than merged rows or columns (transformers issue 45381).
    Raises:
        ValueError: when the tokens ask for more grids than given, or shapes disagree.
    """
    import torch

    token_types = torch.as_tensor(token_types)
    if token_types.dim() != 2:
        raise ValueError(f"token_types must be [B, S], got shape {tuple(token_types.shape)}")
    if not isinstance(return_deltas, bool):
        raise ValueError(f"return_deltas must be True or False, got {return_deltas!r}")
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask)
        if not torch.isin(attention_mask, torch.tensor([0, 1], dtype=attention_mask.dtype)).all():
            raise ValueError("attention_mask must hold 0 and 1 only")
    merge = _merge_size(spatial_merge_size)
    grids = {kind: [list(g) for g in _grids(thw.tolist(), merge)] if thw is not None and len(thw) else []
             for kind, thw in ((IMAGE, image_grid_thw), (VIDEO, video_grid_thw))}
    intervals = list(video_time_intervals) if video_time_intervals is not None else [1.0] * len(grids[VIDEO])
    if len(intervals) != len(grids[VIDEO]):
        raise ValueError("video_time_intervals must give one value per video grid")
    for grid, interval in zip(grids[VIDEO], intervals):
        # t * interval must stay an exact position: finite, >= 0, below 2^24 (float32 holds every integer there).
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not math.isfinite(interval) \
                or interval < 0 or grid[0] * interval >= 2**24:
            raise ValueError(f"video_time_intervals: {interval!r} is not a finite step >= 0 that keeps the video's "
                             f"{grid[0]} temporal positions below 2**24")
    used = {IMAGE: 0, VIDEO: 0}
    batch, seq = token_types.shape
    if attention_mask is not None and tuple(attention_mask.shape) != (batch, seq):
        raise ValueError(f"attention_mask must be [B, S] = [{batch}, {seq}] like token_types, got {tuple(attention_mask.shape)}")
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
                h, w = h // merge, w // merge
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
    for kind, name in ((IMAGE, "image"), (VIDEO, "video")):
        if used[kind] != len(grids[kind]):
            raise ValueError(f"{len(grids[kind])} {name} grids given, token_types has {used[kind]} {name} runs")
    if not return_deltas:
        return out
    if seq == 0:
        raise ValueError("token_types has no tokens: rope_deltas of an empty prompt are undefined")
    kept = out.masked_fill(~attention_mask.bool()[None], 0) if attention_mask is not None else out
    return out, kept.amax(dim=(0, 2)) + 1 - seq


def text_position_ids(attention_mask):
    """transformers' positions of a (left-padded) batch: ``mask.cumsum(-1) - 1``, padding at 1.

    Args:
        attention_mask: ``[B, T]`` ints (1 = token, 0 = padding), numpy or torch; T covers the
            cache and the new tokens.
    Returns:
        int64 ``[B, T]`` of the same kind; a decode step takes the last ``S`` columns.

    >>> text_position_ids(np.array([[0, 0, 1, 1, 1]])).tolist()
    [[1, 1, 0, 1, 2]]
    """
    mask = np.asarray(attention_mask)
    if mask.ndim != 2 or mask.dtype.kind not in "iub" or not np.isin(mask, (0, 1)).all():
        raise ValueError(f"attention_mask must be [B, T] of 0 and 1, got {mask.dtype} {mask.shape}")
    mask = mask.astype(np.int64)
    pos = np.where(mask == 0, 1, mask.cumsum(-1) - 1)
    return _like(pos, attention_mask)


def decode_position_ids(rope_deltas, past_length: int, steps: int = 1):
    """M-RoPE positions of the next ``steps`` tokens after ``past_length`` cached ones.

    Every axis gets ``past_length + i + rope_deltas`` (the rule of transformers' and Qwen's
    ``generate``): dropping ``rope_deltas`` shifts every decoded token by the image's saved
    positions, and the model repeats itself.

    Args:
        rope_deltas: ``[B]`` ints from ``mrope_position_ids(..., return_deltas=True)``.
        past_length: tokens in the cache, padding included (the attention mask's length).
    Returns:
        int64 ``[3, B, steps]``, numpy or torch like ``rope_deltas``.

    >>> decode_position_ids(np.array([-2]), past_length=10)[:, 0].tolist()
    [[8], [8], [8]]
    """
    deltas = np.asarray(rope_deltas)
    if deltas.ndim != 1 or deltas.dtype.kind not in "iu" or (deltas.size and np.abs(deltas).max() >= 2**31):
        raise ValueError(f"rope_deltas must be [B] ints (as mrope_position_ids returns them), got "
                         f"{deltas.dtype} {deltas.shape}")
    deltas = deltas.astype(np.int64)
    if isinstance(past_length, bool) or not isinstance(past_length, (int, np.integer)) or not 0 <= past_length < 2**31:
        raise ValueError(f"past_length must be an int from 0 to 2**31 - 1, got {past_length!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    if steps >= 2**31:
        raise ValueError(f"steps must be below 2**31, got {steps}")
    pos = past_length + np.arange(steps)[None, :] + deltas[:, None]
    return _like(np.broadcast_to(pos, (3, *pos.shape)).copy(), rope_deltas)


def _like(array: np.ndarray, like):
    """``array`` as a torch tensor when ``like`` is one (torch imported only then)."""
    if type(like).__module__.startswith("torch"):
        import torch

        return torch.from_numpy(array)
    return array


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
    import torch

    m = _merge_size(spatial_merge_size)
    row, col = _patch_rows_cols(_grids(grid_thw.tolist(), m), m)
    return torch.from_numpy(np.stack([row, col]))[:, None, :]


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
    import torch

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


# ---- Qwen-VL vision encoders: the grid-dependent inputs, with numpy alone ----------------------

def _merge_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"spatial_merge_size must be an int >= 1, got {value!r}")
    return int(value)


def _grids(grid_thw, merge: int) -> np.ndarray:
    grid = np.asarray(grid_thw)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0 or not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"grid_thw must be a non-empty [N, 3] integer array of (t, h, w), got {grid.dtype} {grid.shape}")
    if (grid <= 0).any() or (grid > 2**20).any():
        raise ValueError(f"grid_thw entries must be positive (and below 2**20), got {grid.tolist()}")
    if int(np.prod(grid, axis=1).sum()) > 2**24:
        raise ValueError(f"grid_thw {grid.tolist()[:4]}: more than 2**24 patches in all")
    if (grid[:, 1:] % merge).any():
        raise ValueError(f"grid_thw {grid.tolist()}: h and w must be multiples of spatial_merge_size {merge} "
                         "(an image not divisible into merge blocks)")
    return grid.astype(np.int64)


def _block_order(h: int, w: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    # (row, col) of each patch, patches of one m x m merge block adjacent (the encoder's order).
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = (h // m, m, w // m, m)
    return rows.reshape(block).transpose(0, 2, 1, 3).ravel(), cols.reshape(block).transpose(0, 2, 1, 3).ravel()


def _patch_rows_cols(grid: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    # Every patch's (row, column), images one after another, each frame of a video repeated.
    order = [_block_order(h, w, m) for _, h, w in grid.tolist()]
    return (np.concatenate([np.tile(r, t) for (r, _), t in zip(order, grid[:, 0].tolist())]),
            np.concatenate([np.tile(c, t) for (_, c), t in zip(order, grid[:, 0].tolist())]))


def _window_index(grid: np.ndarray, m: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    # Merged blocks regrouped window by window (window x window blocks, row-major, each frame
    # on its own); cu_window_seqlens counts patches. Partial windows at the edges are kept short.
    index, cu, offset = [], [0], 0
    for t, h, w in grid.tolist():
        bh, bw = h // m, w // m
        blocks = np.arange(t * bh * bw).reshape(t, bh, bw) + offset
        for frame in blocks:
            for r in range(0, bh, window):
                for c in range(0, bw, window):
                    chunk = frame[r:r + window, c:c + window].ravel()
                    index.append(chunk)
                    cu.append(cu[-1] + chunk.size * m * m)
        offset += t * bh * bw
    return np.concatenate(index), np.asarray(cu, dtype=np.int32)


def _axis_taps(index: np.ndarray, size: np.ndarray, side: int, align_corners: bool) -> tuple[np.ndarray, np.ndarray]:
    # Bilinear taps into a side-long learned table for `index` on an axis resampled to `size`,
    # in float32 as the model computes them (F.interpolate's source coordinate).
    index, size = index.astype(np.float32), size.astype(np.float32)
    if align_corners:
        src = index * np.float32(side - 1) / np.maximum(size - 1, np.float32(1))
    else:
        src = (index + np.float32(0.5)) * np.float32(side) / size - np.float32(0.5)
    floor = np.floor(src)
    offsets = np.arange(2, dtype=np.float32)
    taps = np.clip(floor.astype(np.int64)[:, None] + offsets.astype(np.int64), 0, side - 1)
    weights = np.clip(np.float32(1) - np.abs(src[:, None] - floor[:, None] - offsets), np.float32(0), None)
    return taps, weights.astype(np.float32)


def vision_grid_inputs(grid_thw, *, spatial_merge_size: int, window_size: int | None = None,
                       patch_size: int | None = None, num_grid_per_side: int | None = None,
                       interpolation: str = "bilinear", align_corners: bool = True) -> dict[str, np.ndarray]:
    """The grid-dependent inputs of an exported Qwen-VL vision encoder, computed with numpy.

    An encoder exported by `rope_export.hf.vision_grid` takes these as graph inputs beside
    ``pixel_values``; its ONNX metadata ``rope_export.vision_grid`` holds the keyword
    arguments to pass here. Patches come in the encoder's order: per image (and frame),
    ``merge x merge`` blocks row-major, the patches of a block adjacent.

    Args:
        grid_thw: ``[N, 3]`` integer (t, h, w) patch grids, one row per image or video, h and w
            multiples of ``spatial_merge_size``. Below P = sum(t*h*w) patches, M = 2 patches
            per block side.
        spatial_merge_size: the vision config's ``spatial_merge_size`` (2 for Qwen2/2.5/3-VL).
        window_size, patch_size: Qwen2.5-VL's window attention (``window_size`` in pixels, 112);
            both or neither.
        num_grid_per_side: Qwen3-VL's learned position table side (sqrt of
            ``num_position_embeddings``); resampled bilinearly to each grid.
        interpolation, align_corners: the resampling (Qwen3-VL: "bilinear", True).
    Returns:
        ``position_ids`` int64 [P, 2] (row, column) for the rotary; ``cu_seqlens`` int32
        [1 + sum(t)], one attention segment per frame; with a window: ``window_index`` int64
        [P / M^2] (blocks in window order) and ``cu_window_seqlens`` int32 (patches per window,
        cumulated); with a table: ``interp_indices`` int64 [P, 4] and ``interp_weights``
        float32 [P, 4].
    Raises:
        ValueError: a malformed grid or an incomplete set of parameters.

    >>> inputs = vision_grid_inputs([[1, 2, 4]], spatial_merge_size=2)
    >>> inputs["position_ids"].T.tolist(), inputs["cu_seqlens"].tolist()
    ([[0, 0, 1, 1, 0, 0, 1, 1], [0, 1, 0, 1, 2, 3, 2, 3]], [0, 8])
    """
    m = _merge_size(spatial_merge_size)
    grid = _grids(grid_thw, m)
    row, col = _patch_rows_cols(grid, m)
    frames = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])
    out = {"position_ids": np.stack([row, col], axis=-1).astype(np.int64),
           "cu_seqlens": np.concatenate([[0], np.cumsum(frames)]).astype(np.int32)}
    if (window_size is None) != (patch_size is None):
        raise ValueError("window_size and patch_size go together (Qwen2.5-VL's window attention)")
    if window_size is not None:
        window = int(window_size) // m // int(patch_size)
        if window < 1:
            raise ValueError(f"window_size {window_size} is smaller than one merged block ({m} x {patch_size} px)")
        out["window_index"], out["cu_window_seqlens"] = _window_index(grid, m, window)
    if num_grid_per_side is not None:
        if interpolation != "bilinear":
            raise ValueError(f"interpolation {interpolation!r}: only 'bilinear' (Qwen3-VL's) is implemented")
        side = int(num_grid_per_side)
        patches = grid.prod(axis=1)  # each patch resampled against its own image's h and w
        h_taps, h_w = _axis_taps(row, np.repeat(grid[:, 1], patches), side, align_corners)
        w_taps, w_w = _axis_taps(col, np.repeat(grid[:, 2], patches), side, align_corners)
        out["interp_indices"] = (h_taps[:, :, None] * side + w_taps[:, None, :]).reshape(-1, 4)
        out["interp_weights"] = (h_w[:, :, None] * w_w[:, None, :]).reshape(-1, 4)
    return out
