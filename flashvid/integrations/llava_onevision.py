"""FlashVID for ``LlavaOnevisionForConditionalGeneration`` (LLaVA-OneVision and LLaVA-Video).

Video path while enabled (§2, §3.1, §11):

1. ``model.model.get_video_features`` runs SigLIP and the projector on every frame, as stock. A
   forward hook on ``q_proj``/``k_proj`` of the SigLIP layer whose output is the selected
   ``vision_feature_layer`` captures q and k; nothing else is captured and every layer keeps its
   attention implementation.
2. Pooling: "llava_onevision" uses the model's own bilinear ``apply_pooling`` (27x27 -> 14x14,
   196 tokens per frame at 384 px); "llava_video" swaps in a 2x2 average pool for that call
   (27x27 -> 13x13 = 169, last row and column dropped, as LLaVA-Video's ``mm_spatial_pool_mode
   = average``). The importance map [F, 729] is pooled by the same function as the features.
3. Each video is compressed on its own. Newlines: "llava_onevision" appends one
   ``image_newline`` after the compressed tokens (``one_token``); "llava_video" puts one after
   the kept tokens of every frame, also after a frame that kept nothing (``frame``).
4. Each video's placeholder run (``F * 196 + 1`` tokens, as LlavaOnevisionProcessor writes it) is
   replaced by one placeholder per output token; positions are renumbered contiguously by
   ``generate`` (1-D RoPE). Duplicate positions (quirks Q2/Q3, ``dedupe=False``) stay two tokens,
   as published.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as nnf

from ..config import FlashVIDConfig
from ._handle import Adapter
from ._prompt import (
    as_mask,
    assemble_rows,
    assign_slots,
    pad_flags,
    pad_side,
    rebuild_text_inputs,
    reject,
)
from ._records import Prepared, VideoRecord
from .importance import HALF_DTYPES, attention_column_mean

VARIANTS = ("llava_onevision", "llava_video")


class LlavaOnevisionAdapter(Adapter):
    """FlashVID on a ``LlavaOnevisionForConditionalGeneration`` instance (see module docs)."""

    family = "llava_onevision"

    def __init__(self, model: Any, config: FlashVIDConfig, *, variant: str, **options: Any) -> None:
        super().__init__(model, config, variant=variant, **options)
        vision = model.config.vision_config
        self.side = vision.image_size // vision.patch_size  # 27 at 384 px / patch 14
        self.stock_per_frame = math.ceil(self.side / 2) ** 2  # what the processor counts: 196
        self.attention = self._find_attention()

    # ------------------------------------------------------------------ setup
    def _find_attention(self) -> Any:
        cfg = self.model.config
        layer = cfg.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(
                f"vision_feature_layer={layer!r}: FlashVID needs one vision feature layer (an int) "
                "to take the importance scores from; multi-layer features are not supported")
        tower = self.base.vision_tower
        inner = getattr(tower, "vision_model", tower)
        layers = getattr(getattr(inner, "encoder", None), "layers", None)
        if layers is None:
            raise TypeError(
                f"unsupported vision tower {type(tower).__name__}: expected a SigLIP vision model "
                "(encoder.layers), as in LLaVA-OneVision / LLaVA-Video")
        # hidden_states[0] is the embedding output; hidden_states[i] is the output of layer i-1.
        index = layer if layer >= 0 else len(layers) + 1 + layer
        if not 1 <= index <= len(layers):
            raise ValueError(
                f"vision_feature_layer={layer} selects the patch embeddings (or is out of range "
                f"for {len(layers)} layers); FlashVID needs the output of an attention layer")
        attn = layers[index - 1].self_attn
        for name in ("q_proj", "k_proj", "num_heads", "head_dim"):
            if not hasattr(attn, name):
                raise TypeError(f"unsupported SigLIP attention {type(attn).__name__}: no `{name}`")
        return attn

    def _forward_inputs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # The prepared call carries a list of per-video features (so that generate() can expand
        # them for beams / num_return_sequences); the stock forward wants one [1, V, D] tensor.
        mm = kwargs.get("mm_encoder_outputs")
        video = mm.get("video") if isinstance(mm, dict) else None
        pooled = getattr(video, "pooler_output", None)
        if isinstance(pooled, (list, tuple)):
            mm = dict(mm)
            mm["video"] = type(video)(pooler_output=torch.cat(list(pooled), dim=0)[None])
            kwargs = dict(kwargs, mm_encoder_outputs=mm)
        return kwargs

    # ------------------------------------------------------------------ pooling
    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """[S, side*side, C] -> [S, N, C] with this variant's pooling."""
        if self.variant == "llava_onevision":
            return self.base.apply_pooling(x)
        return average_pool(x, self.side)

    # ------------------------------------------------------------------ encoding
    def _encode(self, videos: list[torch.Tensor], layer: Any, strategy: Any
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """All frames of all videos: features [S, N, D] and importance [S, N] float32."""
        pixels = torch.cat(videos, dim=0)[None]  # [1, S, 3, H, W]
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str):
            def hook(module: Any, args: Any, output: torch.Tensor) -> None:
                captured[name] = output
            return hook

        handles = [self.attention.q_proj.register_forward_hook(keep("q")),
                   self.attention.k_proj.register_forward_hook(keep("k"))]
        # LLaVA-Video pools differently: swap the pooling of this one call (instance attribute).
        swap = self.variant == "llava_video"
        own_pool = self.base.__dict__.get("apply_pooling")
        if swap:
            self.base.__dict__["apply_pooling"] = self._pool
        try:
            out = self.base.get_video_features(pixels, vision_feature_layer=layer,
                                               vision_feature_select_strategy=strategy,
                                               return_dict=True)
        finally:
            for h in handles:
                h.remove()
            if swap:
                if own_pool is None:
                    del self.base.__dict__["apply_pooling"]
                else:
                    self.base.__dict__["apply_pooling"] = own_pool
        if "q" not in captured or "k" not in captured:
            raise RuntimeError("the importance hooks did not fire: the SigLIP layer was not run")
        frames = pixels.shape[1]
        pooled = out.pooler_output[0, :-1]  # drop the stock trailing newline
        features = pooled.reshape(frames, -1, pooled.shape[-1])
        q, k = captured["q"], captured["k"]
        heads, head_dim = self.attention.num_heads, self.attention.head_dim
        q = q.view(frames, -1, heads, head_dim).transpose(1, 2)
        k = k.view(frames, -1, heads, head_dim).transpose(1, 2)
        round_to = features.dtype if features.dtype in HALF_DTYPES else None
        scores = attention_column_mean(q, k, scale=getattr(self.attention, "scale", None),
                                       round_to=round_to)  # [S, side*side]
        if strategy == "default":
            scores = scores[:, 1:]
        importance = self._pool(scores[..., None])[..., 0]
        if round_to is not None:
            importance = importance.to(round_to).float()
        if importance.shape != features.shape[:2]:
            raise RuntimeError(
                f"importance {tuple(importance.shape)} does not match the pooled features "
                f"{tuple(features.shape[:2])}")
        return features, importance

    # ------------------------------------------------------------------ the call
    def _prepare(self, inputs: dict[str, Any]) -> Prepared:
        reject(inputs, ("inputs_embeds",), "the adapter rebuilds the prompt from input_ids")
        reject(inputs, ("position_ids",), "LLaVA positions are renumbered over the compressed "
               "prompt; leave them to the model")
        ids = inputs.get("input_ids")
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise ValueError("input_ids [batch, length] are required with pixel_values_videos")
        videos = _video_list(inputs.pop("pixel_values_videos"))
        cfg = self.model.config
        layer = inputs.pop("vision_feature_layer", None)
        strategy = inputs.pop("vision_feature_select_strategy", None)
        layer = cfg.vision_feature_layer if layer is None else layer
        strategy = cfg.vision_feature_select_strategy if strategy is None else strategy
        if layer != cfg.vision_feature_layer:
            raise ValueError(
                f"vision_feature_layer={layer} differs from the config's "
                f"{cfg.vision_feature_layer}, which the importance hooks were set up for")
        mask = as_mask(inputs.get("attention_mask"), ids)
        frame_counts = [int(v.shape[0]) for v in videos]
        stock_counts = [f * self.stock_per_frame + 1 for f in frame_counts]
        slots = assign_slots(ids, mask, cfg.video_token_id, stock_counts,
                             f"frames x {self.stock_per_frame} + 1 newline per video")

        features, importance = self._encode(videos, layer, strategy)
        newline = self.base.image_newline.to(features.device, features.dtype)
        per_video_features, records, video_entries = [], [], []
        bounds = [0]
        for frames in frame_counts:
            bounds.append(bounds[-1] + frames)
        videos = [(features[s:e], importance[s:e]) for s, e in zip(bounds, bounds[1:])]
        results = self._run_compressor(videos)
        for (row, cols), frames, before, (x, a), result in zip(slots, frame_counts, stock_counts,
                                                              videos, results):
            tokens = self._with_newlines(result.tokens, result.indices, frames, x.shape[1],
                                         newline)
            per_video_features.append(tokens)
            count = int(tokens.shape[0])
            video_entries.append((row, cols[:1].repeat(count),
                                  torch.full((count,), -1, dtype=torch.long, device=cols.device)))
            records.append(VideoRecord(row, frames, int(x.shape[1]), a, result, before, count))

        dropped = (ids == cfg.video_token_id) & mask
        entries = assemble_rows(mask, dropped, video_entries)
        side = pad_side(mask)
        out = rebuild_text_inputs(inputs, entries, cfg.video_token_id, self._pad_id(), side)
        out.pop("image_sizes_videos", None)
        mm = dict(inputs.get("mm_encoder_outputs") or {})
        mm["video"] = _pooling_output(per_video_features)
        out["mm_encoder_outputs"] = mm
        return Prepared(out, records, entries, mask.sum(1).tolist(),
                        [int(e.numel()) for e in entries],
                        self._candidates(entries, records, out["input_ids"].shape[1], side))

    def _candidates(self, entries: list[torch.Tensor], records: list[VideoRecord], length: int,
                    side: str) -> torch.Tensor:
        """[B, L'] bool prunable columns (§10): each video's run of new placeholders;
        OneVision's trailing newline stays outside, LLaVA-Video's per-frame newlines are in."""
        flags = []
        for b, e in enumerate(entries):
            new = (e < 0).cpu()
            if self.variant == "llava_onevision":
                ends = new.nonzero().flatten()
                end = 0
                for record in (r for r in records if r.sample == b):
                    end += record.slots_after
                    new[ends[end - 1]] = False  # the video's newline
            flags.append(new)
        return pad_flags(flags, length, side)

    def _with_newlines(self, tokens: torch.Tensor, indices: torch.Tensor, frames: int,
                       per_frame: int, newline: torch.Tensor) -> torch.Tensor:
        """[V, D] -> the video's LLM tokens with its newline token(s) (§11)."""
        return with_newlines(self.variant, tokens, indices, frames, per_frame, newline)


def average_pool(x: torch.Tensor, side: int) -> torch.Tensor:
    """LLaVA-Video's pooling (``mm_spatial_pool_mode = average``): [S, side*side, C] ->
    [S, (side // 2) ** 2, C], a 2x2 average pool (an odd last row and column are dropped)."""
    frames, _, channels = x.shape
    grid = x.view(frames, side, side, channels).permute(0, 3, 1, 2)
    pooled = nnf.avg_pool2d(grid, kernel_size=2, stride=2)
    return pooled.permute(0, 2, 3, 1).reshape(frames, -1, channels)


def newline_count(variant: str, frames: int) -> int:
    """Newline tokens a compressed video gets: 1 ("llava_onevision", ``one_token``) or one per
    frame ("llava_video", ``frame``)."""
    return 1 if variant == "llava_onevision" else int(frames)


def with_newlines(variant: str, tokens: torch.Tensor, indices: torch.Tensor, frames: int,
                  per_frame: int, newline: torch.Tensor) -> torch.Tensor:
    """A compressed video's LLM rows with its newline row(s) (§11).

    Args:
        variant: "llava_onevision" (one ``newline`` after all rows) or "llava_video" (one after
            the rows of every frame, also after a frame that kept none).
        tokens: [V, D] compressed rows, ordered by ``indices``.
        indices: [V] int64 ascending global positions t * per_frame + n.
        frames, per_frame: the video's F and N.
        newline: [D] the model's ``image_newline``, in ``tokens``' dtype and device.

    Returns:
        [V + newline_count(variant, frames), D].
    """
    if variant == "llava_onevision":
        return torch.cat([tokens, newline[None]], dim=0)
    frame_of = torch.div(indices, per_frame, rounding_mode="floor")
    counts = torch.bincount(frame_of, minlength=frames).tolist()
    pieces = []
    for chunk in torch.split(tokens, counts):
        pieces += [chunk, newline[None]]
    return torch.cat(pieces, dim=0)


def _video_list(pixels: Any) -> list[torch.Tensor]:
    """pixel_values_videos as a list of [F_i, 3, H, W] tensors (one per video)."""
    if isinstance(pixels, torch.Tensor):
        if pixels.dim() != 5:
            raise ValueError(
                f"pixel_values_videos must be [videos, frames, 3, H, W], got {tuple(pixels.shape)}")
        return list(pixels.unbind(0))
    if isinstance(pixels, (list, tuple)) and pixels:
        out = []
        for v in pixels:
            if not isinstance(v, torch.Tensor) or v.dim() not in (4, 5) or \
                    (v.dim() == 5 and v.shape[0] != 1):
                raise ValueError(
                    "each entry of a pixel_values_videos list must be one video [frames, 3, H, W] "
                    f"(or [1, frames, 3, H, W]); got {getattr(v, 'shape', type(v).__name__)}")
            out.append(v[0] if v.dim() == 5 else v)
        shapes = {tuple(v.shape[1:]) for v in out}
        if len(shapes) != 1:
            raise ValueError(f"all video frames must have one size [3, H, W]; got {sorted(shapes)}")
        return out
    raise TypeError(
        "pixel_values_videos must be a [videos, frames, 3, H, W] tensor or a list of "
        f"[frames, 3, H, W] tensors, got {type(pixels).__name__}")


def _pooling_output(features: list[torch.Tensor]) -> Any:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    return BaseModelOutputWithPooling(pooler_output=features)


def resolve_variant(model: Any, variant: str | None) -> str:
    """The LLaVA variant: the given one, else "llava_video" when the checkpoint name says
    LLaVA-Video, else "llava_onevision"."""
    if variant is None:
        return variant_of_name(getattr(model.config, "_name_or_path", ""))
    key = variant.replace("-", "_").lower()
    if key in ("onevision", "ov", "llava_ov"):
        key = "llava_onevision"
    if key == "video":
        key = "llava_video"
    if key not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)} (or None to detect), "
                         f"got {variant!r}")
    return key


def variant_of_name(name: Any) -> str:
    """"llava_video" when a checkpoint name (or path) says LLaVA-Video, else "llava_onevision"."""
    key = str(name or "").lower().replace("_", "-")
    return "llava_video" if "llava-video" in key else "llava_onevision"
