"""The part of the Qwen2.5-VL and Qwen3-VL adapters that the two share.

Video path while enabled (§2, §3.2, §11):

1. ``model.model.get_video_features`` runs the vision tower as stock. On the last vision block
   only, a forward pre-hook on its attention captures the rotary ``position_embeddings`` and a
   forward hook on its ``qkv`` projection captures q and k (no recomputation, no eager attention,
   no attention maps). RoPE is applied with the model's own ``apply_rotary_pos_emb_vision``.
2. Importance: per temporal patch (one FlashVID frame = 2 video frames), the column mean of
   softmax(q kᵀ / sqrt(d)) over that frame's pre-merge patches, then the mean over each 2x2 merge
   unit; Qwen2.5-VL's window order is undone with argsort(window_index), like the merger output.
3. Each video's merged tokens [t, h*w/4, D] are compressed on their own.
4. M-RoPE positions come from the model's ``get_rope_index`` on the caller's uncompressed
   prompt and are gathered at the kept columns (a merged token sits at its representative's
   (t, h, w)); row 0 of the [4, B, L'] ``position_ids`` is the plain 0..L'-1 text position used
   for the causal mask; ``model.model.rope_deltas`` is set from the gathered positions, so text
   after the video and every decoding step get the same positions as without compression.
   Duplicate positions (Q2/Q3, ``dedupe=False``) become two sequence slots with the same
   position, each holding its own row (the published code fills both with one of the two rows).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import torch

from ..config import FlashVIDConfig
from ._handle import Adapter
from ._prompt import (
    as_mask,
    assemble_rows,
    assign_slots,
    gather_rows,
    pad_side,
    rebuild_text_inputs,
    reject,
)
from ._records import Prepared, VideoRecord
from .importance import HALF_DTYPES, attention_column_mean, merge_unit_mean


class QwenVLAdapter(Adapter):
    """FlashVID on a Qwen2.5-VL / Qwen3-VL ``ForConditionalGeneration`` instance."""

    window_order = False  # Qwen2.5-VL processes patches in window order
    default_drop_markers = False  # Qwen3-VL drops <|vision_start|>/<|vision_end|> (§11)

    def __init__(self, model: Any, config: FlashVIDConfig, *, drop_vision_markers: bool | None,
                 **options: Any) -> None:
        super().__init__(model, config, variant=self.family, **options)
        if drop_vision_markers is not None and not isinstance(drop_vision_markers, bool):
            raise TypeError(
                f"drop_vision_markers must be a bool or None, got {drop_vision_markers!r}")
        self.drop_markers = (self.default_drop_markers if drop_vision_markers is None
                             else drop_vision_markers)
        visual = self.base.visual
        blocks = getattr(visual, "blocks", None)
        if blocks is None or not len(blocks):
            raise TypeError(f"unsupported vision tower {type(visual).__name__}: no blocks")
        self.attention = blocks[-1].attn
        for name in ("qkv", "num_heads"):
            if not hasattr(self.attention, name):
                raise TypeError(
                    f"unsupported vision attention {type(self.attention).__name__}: no `{name}`")
        module = sys.modules[type(self.attention).__module__]
        self.apply_rope = getattr(module, "apply_rotary_pos_emb_vision", None)
        if self.apply_rope is None:
            raise TypeError(f"{module.__name__} has no apply_rotary_pos_emb_vision")
        self.merge = int(visual.spatial_merge_size)
        self.unit = self.merge * self.merge

    # ------------------------------------------------------------------ encoding
    def _window_index(self, grid: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _encode(self, pixels: torch.Tensor, grid: torch.Tensor) -> tuple[Any, list[torch.Tensor]]:
        """Run the vision tower; return its output and per-video importance [t, h*w/unit]."""
        captured: dict[str, Any] = {}

        def pre_hook(module: Any, args: tuple, kwargs: dict) -> None:
            pe = kwargs.get("position_embeddings")
            if pe is None and len(args) > 2:
                pe = args[2]
            captured["rope"] = pe

        def qkv_hook(module: Any, args: Any, output: torch.Tensor) -> None:
            captured["qkv"] = output

        handles = [self.attention.register_forward_pre_hook(pre_hook, with_kwargs=True),
                   self.attention.qkv.register_forward_hook(qkv_hook)]
        try:
            out = self.base.get_video_features(pixels, grid)
        finally:
            for h in handles:
                h.remove()
        if captured.get("qkv") is None or captured.get("rope") is None:
            raise RuntimeError("the importance hooks did not fire on the last vision block")
        qkv = captured["qkv"]
        length = qkv.shape[0]
        heads = int(self.attention.num_heads)
        q, k, _ = qkv.reshape(length, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        cos, sin = captured["rope"]
        q, k = self.apply_rope(q, k, cos, sin)  # [L, H, d] each
        round_to = qkv.dtype if qkv.dtype in HALF_DTYPES else None
        scale = getattr(self.attention, "scaling", None)
        scores, offset = [], 0
        for t, h, w in grid.tolist():
            n = t * h * w
            qv = q[offset:offset + n].reshape(t, h * w, heads, -1).transpose(1, 2)
            kv = k[offset:offset + n].reshape(t, h * w, heads, -1).transpose(1, 2)
            scores.append(attention_column_mean(qv, kv, scale=scale, round_to=round_to).flatten())
            offset += n
        if offset != length:
            raise RuntimeError(f"video_grid_thw covers {offset} patches, the tower saw {length}")
        merged = merge_unit_mean(torch.cat(scores), self.unit, round_to)  # [L / unit]
        if self.window_order:
            merged = merged[torch.argsort(self._window_index(grid).to(merged.device))]
        sizes = [t * h * w // self.unit for t, h, w in grid.tolist()]
        importance = [m.view(t, -1) for m, (t, _, _) in zip(torch.split(merged, sizes),
                                                               grid.tolist())]
        return out, importance

    # ------------------------------------------------------------------ the call
    def _prepare(self, inputs: dict[str, Any]) -> Prepared:
        reject(inputs, ("inputs_embeds",), "the adapter rebuilds the prompt from input_ids")
        mm_in = inputs.get("mm_encoder_outputs") or {}
        if mm_in.get("video") is not None:
            raise ValueError("pass either pixel_values_videos or mm_encoder_outputs['video'], "
                             "not both")
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError("input_ids [batch, length] are required with pixel_values_videos")
        grid = inputs.get("video_grid_thw")
        if not isinstance(grid, torch.Tensor) or grid.dim() != 2 or grid.shape[1] != 3:
            raise ValueError("video_grid_thw [videos, 3] (t, h, w per video) is required with "
                             "pixel_values_videos, as the processor returns it")
        cfg = self.model.config
        mask = as_mask(inputs.get("attention_mask"), ids)
        token_types = inputs.get("mm_token_type_ids")
        if token_types is None:  # what the processor would return (0 text, 1 image, 2 video)
            token_types = ((ids == cfg.image_token_id).long()
                           + 2 * (ids == cfg.video_token_id).long())
        inputs["mm_token_type_ids"] = token_types
        counts = [t * h * w // self.unit for t, h, w in grid.tolist()]
        slots = assign_slots(ids, mask, cfg.video_token_id, counts,
                             f"t*h*w/{self.unit} per video from video_grid_thw")

        full_positions = self._full_positions(inputs, ids, token_types)  # [3, B, L]
        out_video, importance = self._encode(inputs["pixel_values_videos"], grid)
        features = list(out_video.pooler_output)
        deepstack = getattr(out_video, "deepstack_features", None)
        kept_features, kept_deep, records, video_entries = [], [], [], []
        videos = [(x.view(int(a.shape[0]), -1, x.shape[-1]), a)
                  for x, a in zip(features, importance)]
        results = self._run_compressor(videos)
        for v, ((row, cols), (tokens, a), count, result) in enumerate(
                zip(slots, videos, counts, results)):
            frames = int(a.shape[0])
            kept = cols[result.indices.to(cols.device)]
            kept_features.append(result.tokens)
            if deepstack is not None:
                kept_deep.append([level[v][result.indices.to(level[v].device)]
                                  for level in deepstack])
            video_entries.append((row, kept, kept))
            records.append(VideoRecord(row, frames, int(tokens.shape[1]), a, result, count,
                                       int(kept.numel())))

        slot_mask = (ids == cfg.video_token_id) & mask
        dropped = slot_mask | self._markers(ids, slot_mask) if self.drop_markers else slot_mask
        entries = assemble_rows(mask, dropped, video_entries)
        side = pad_side(mask)
        out = rebuild_text_inputs(inputs, entries, cfg.video_token_id, self._pad_id(), side)
        new_mask = out["attention_mask"].bool()
        positions = gather_rows(full_positions, entries, new_value=0, pad_value=0, side=side,
                                batch_dim=1)
        text = (new_mask.long().cumsum(-1) - 1).masked_fill(~new_mask, 0)
        out["position_ids"] = torch.cat([text[None].to(positions), positions], dim=0)
        top = positions.masked_fill(~new_mask[None].to(positions.device), -1).amax(dim=(0, 2))
        self.base.rope_deltas = (top + 1 - new_mask.sum(-1).to(top.device)).view(-1, 1)
        for name in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
            out.pop(name, None)
        mm = dict(mm_in)
        if deepstack is None:
            mm["video"] = type(out_video)(pooler_output=tuple(kept_features))
        else:
            levels = [tuple(per_video[i] for per_video in kept_deep) for i in range(len(deepstack))]
            mm["video"] = type(out_video)(pooler_output=tuple(kept_features),
                                          deepstack_features=levels)
        out["mm_encoder_outputs"] = mm
        # the inner-LLM stage's candidates: the kept video tokens (§10: the video run for
        # Qwen2.5-VL, visual_pos_masks for Qwen3-VL)
        candidates = gather_rows(slot_mask.long(), entries, new_value=0, pad_value=0,
                                 side=side).bool()
        return Prepared(out, records, entries, mask.sum(1).tolist(),
                        [int(e.numel()) for e in entries], candidates)

    def _full_positions(self, inputs: dict[str, Any], ids: torch.Tensor,
                        token_types: torch.Tensor) -> torch.Tensor:
        """[3, B, L] M-RoPE positions of the uncompressed prompt (given, or from get_rope_index)."""
        given = inputs.get("position_ids")
        if given is not None:
            if given.dim() != 3 or given.shape[0] not in (3, 4) or given.shape[1:] != ids.shape:
                raise ValueError(
                    f"position_ids must be the M-RoPE positions [3 or 4, B, L] of the prompt, got "
                    f"{tuple(given.shape)} for input_ids {tuple(ids.shape)}")
            return given[-3:]
        get_rope_index = self.base.get_rope_index
        accepted = inspect.signature(get_rope_index).parameters
        kwargs = {name: inputs.get(name) for name in
                  ("image_grid_thw", "video_grid_thw", "second_per_grid_ts", "attention_mask")
                  if name in accepted}
        positions, _ = get_rope_index(ids, mm_token_type_ids=token_types, **kwargs)
        return positions

    def _markers(self, ids: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: <|vision_start|> right before and <|vision_end|> right after a video run."""
        cfg = self.model.config
        before = torch.zeros_like(slots)
        before[:, :-1] = slots[:, 1:]
        after = torch.zeros_like(slots)
        after[:, 1:] = slots[:, :-1]
        return ((ids == cfg.vision_start_token_id) & before) | ((ids == cfg.vision_end_token_id)
                                                                & after)
