"""Runtime of the inner-LLM stage (``llm_prune``, §10) inside a patched ``generate()``.

For the duration of one ``generate()`` call of a video prompt, forward hooks on the language
model do the following (nothing is copied from the model; no class is touched):

* on the language model: classify each call. The first call is the prefill of the rebuilt
  prompt (it must have an empty dynamic cache and the whole prompt); later calls are decoding
  (or verification) steps, which never prune.
* on the query projection of the *scoring layer* (prefill only): keep the pre-RoPE query rows of
  the last prompt token of each row. The scoring layer is K-1, or, in models that mix
  linear-attention (gated DeltaNet) and full-attention layers (Qwen3.5), the nearest
  full-attention layer at or before K-1; a model with no full-attention layer before K is refused.
* before layer K (prefill): rotate those queries with the layer's own ``apply_rotary_pos_emb``,
  take the scoring layer's post-RoPE keys from the cache, compute the last query's weights
  (:func:`last_query_attention`), select with :func:`llm_prune_keep`, and gather the hidden
  states, the rotary cos/sin, the position ids (every M-RoPE row) and any cache positions at the
  kept columns. Rows keep different numbers of tokens: the shorter sequence is left-padded per
  row and gets its own padding mask. Layers >= K therefore run on, and cache, only kept tokens;
  a linear-attention layer >= K builds its convolution and recurrent state from the kept tokens
  alone (its left padding is zeroed by the layer's own 2-D padding mask and leaves the state at
  zero), exactly as if the pruned sequence had been its input, so decoding continues from a
  consistent state.
* before every full-attention layer >= K (prefill and decoding): replace the attention mask by
  one over that layer's own (shorter) cache: the kept prompt columns followed by the generated
  ones. Linear-attention layers get the 2-D padding mask of the kept tokens in the prefill and
  their stock mask (no prompt columns) when decoding. Decoding keeps the positions ``generate``
  gives, i.e. the original ones.

Masks are built for the model's attention implementation: an additive float mask (eager), a
boolean mask (SDPA), a 2-D padding mask (FlashAttention, any implementation whose mask function is
transformers' ``flash_attention_mask``). Other implementations are refused.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from .llm_prune import last_query_attention, llm_prune_keep

FORMATS = {"eager": "additive", "sdpa": "bool"}


def mask_format(config: Any) -> str:
    """"additive", "bool" or "padding" for the model's attention implementation."""
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl in FORMATS:
        return FORMATS[impl]
    from transformers import masking_utils

    fn = masking_utils.ALL_MASK_ATTENTION_FUNCTIONS.get(impl)
    if fn is masking_utils.flash_attention_mask:
        return "padding"
    if fn is masking_utils.sdpa_mask:
        return "bool"
    if fn is getattr(masking_utils, "eager_mask", None):
        return "additive"
    raise ValueError(
        f"the inner-LLM stage supports the eager, sdpa and FlashAttention implementations; this "
        f"model uses {impl!r}. Load it with attn_implementation='sdpa', or pass "
        "llm_retention_ratio=1.0 to flashvid.apply to switch the stage off")


def build_mask(valid: torch.Tensor, q_len: int, fmt: str, dtype: torch.dtype) -> Any:
    """The attention mask of ``q_len`` queries that are the last columns of ``valid`` [B, Lk]
    (bool real keys): causal and padding. Padding queries see themselves (no NaN rows)."""
    if fmt == "padding":
        return None if bool(valid.all()) else valid
    length = valid.shape[1]
    cols = torch.arange(length, device=valid.device)
    rows = cols[length - q_len:]
    allowed = valid[:, None, :] & (cols[None, None, :] <= rows[None, :, None])  # [B, q, Lk]
    allowed |= (cols[None, None, :] == rows[None, :, None]) & ~valid[:, length - q_len:, None]
    allowed = allowed[:, None]
    if fmt == "bool":
        return allowed
    zero = torch.zeros((), dtype=dtype, device=valid.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def gather_columns(x: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """x [..., B or 1, L, ...] (columns at ``dim``, batch right before) -> columns ``index``
    [B, L''] per row."""
    dim = dim % x.dim()
    batch = index.shape[0]
    shape = list(x.shape)
    shape[dim - 1] = batch
    x = x.expand(*shape)
    view = [1] * x.dim()
    view[dim - 1], view[dim] = batch, index.shape[1]
    idx = index.to(x.device).view(view)
    full = list(x.shape)
    full[dim] = index.shape[1]
    return torch.gather(x, dim, idx.expand(*full))


def _cache_keys(cache: Any, layer: int) -> torch.Tensor:
    layers = getattr(cache, "layers", None)
    keys = layers[layer].keys if layers is not None else cache.key_cache[layer]
    if not isinstance(keys, torch.Tensor):
        raise RuntimeError(f"layer {layer} of the cache holds no keys after the prefill")
    return keys


def _cache_length(cache: Any, layer: int) -> int:
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return int(layers[layer].get_seq_length()) if layer < len(layers) else 0
    return int(cache.get_seq_length(layer))


FULL, LINEAR = "full_attention", "linear_attention"
CACHE_LAYERS = {FULL: "DynamicLayer", LINEAR: "LinearAttentionLayer"}


def layer_kinds(language_model: Any) -> list[str]:
    """FULL or LINEAR per decoder layer: a ``self_attn`` module is full (softmax) attention, a
    ``linear_attn`` module (Qwen3.5's gated DeltaNet) is linear attention."""
    kinds = []
    for i, layer in enumerate(language_model.layers):
        if getattr(layer, "self_attn", None) is not None:
            kinds.append(FULL)
        elif getattr(layer, "linear_attn", None) is not None:
            kinds.append(LINEAR)
        else:
            raise TypeError(
                f"decoder layer {i} ({type(layer).__name__}) has neither `self_attn` nor "
                "`linear_attn`; the inner-LLM stage does not know this layer type")
    return kinds


def check_cache(cache: Any, kinds: list[str] | None = None) -> None:
    """The stage needs transformers' default DynamicCache (per-layer growing lengths): a
    DynamicLayer per full-attention layer, a LinearAttentionLayer per linear-attention layer."""
    from transformers.cache_utils import DynamicCache

    layers = list(getattr(cache, "layers", []))
    found = [type(layer).__name__ for layer in layers]
    want = [CACHE_LAYERS[k] for k in (kinds or [])]
    if kinds is None or not found:  # the layers are created lazily: check what is there
        ok = set(found) <= {CACHE_LAYERS[FULL]}
    else:
        ok = found == want
    if type(cache) is not DynamicCache or not ok:
        expected = ("DynamicLayer per full-attention layer and LinearAttentionLayer per "
                    "linear-attention layer" if LINEAR in (kinds or []) else
                    "full-attention layers")
        raise ValueError(
            f"the inner-LLM stage needs a DynamicCache of {expected} (its layers >= K hold "
            f"fewer tokens); got {type(cache).__name__} with {sorted(set(found))}. Use the "
            "default cache, or pass llm_retention_ratio=1.0 to flashvid.apply")


@dataclass
class PruneRecord:
    """What the stage did in the prefill of one ``generate()`` call.

    Attributes:
        candidates: per row, V'_b prunable video tokens.
        kept: per row, [L''_b] int64 columns of the rebuilt prompt that reach layers >= K.
        lengths_before / lengths_after: per row, real tokens before and after layer K.
        attention_layer: the decoder layer whose last-query attention ranked the tokens (K-1,
            or the nearest full-attention layer before it in a hybrid model).
    """

    candidates: list[int] = field(default_factory=list)
    kept: list[torch.Tensor] = field(default_factory=list)
    lengths_before: list[int] = field(default_factory=list)
    lengths_after: list[int] = field(default_factory=list)
    attention_layer: int = -1


class LLMStage:
    """The hooks of one model (built by the adapter; ``session`` arms them for one call)."""

    def __init__(self, language_model: Any, pruning_layer: int, ratio: float) -> None:
        layers = getattr(language_model, "layers", None)
        if layers is None:
            raise TypeError(f"{type(language_model).__name__} has no decoder `layers`")
        if not 1 <= pruning_layer < len(layers):
            raise ValueError(
                f"pruning_layer={pruning_layer} does nothing on a language model with "
                f"{len(layers)} decoder layers (it must be in [1, {len(layers) - 1}]); set "
                "pruning_layer, or llm_retention_ratio=1.0 to switch the inner-LLM stage off")
        self.language_model = language_model
        self.layer = pruning_layer
        self.ratio = ratio
        self.kinds = layer_kinds(language_model)
        full = [i for i in range(pruning_layer) if self.kinds[i] == FULL]
        if not full:
            raise ValueError(
                f"pruning_layer={pruning_layer}: the inner-LLM stage ranks the video tokens by "
                "the attention of the nearest full-attention layer at or before K-1, and layers "
                f"0..{pruning_layer - 1} of this model are all linear-attention layers; full "
                f"attention is at layers {[i for i, k in enumerate(self.kinds) if k == FULL]}, so "
                "pick a pruning_layer after the first of them")
        self.attention_layer = full[-1]
        attn = layers[self.attention_layer].self_attn
        self.heads = int(language_model.config.num_attention_heads)
        self.head_dim = int(attn.head_dim)
        self.scale = float(attn.scaling)
        norm = getattr(attn, "q_norm", None)  # Qwen3-VL/3.5 normalise q per head before RoPE
        if norm is None and attn.q_proj.out_features != self.heads * self.head_dim:
            raise TypeError(
                f"{type(attn).__name__}.q_proj gives {attn.q_proj.out_features} features, not "
                f"heads x head_dim = {self.heads * self.head_dim}, and there is no q_norm to "
                "read the query from; the inner-LLM stage does not know this attention layout")
        self.query_module = attn.q_proj if norm is None else norm
        module = sys.modules[type(attn).__module__]
        self.rope = getattr(module, "apply_rotary_pos_emb", None)
        if self.rope is None:
            raise TypeError(f"{module.__name__} has no apply_rotary_pos_emb")
        mask_format(language_model.config)  # refuse unsupported implementations early

    def session(self, candidates: torch.Tensor, prompt_mask: torch.Tensor) -> _Session:
        """Arm the stage for one generate() call of the rebuilt prompt.

        Args:
            candidates: [B, L'] bool prunable video columns of the rebuilt prompt.
            prompt_mask: [B, L'] bool real columns of the rebuilt prompt.
        """
        return _Session(self, candidates, prompt_mask)


class _Session:
    def __init__(self, stage: LLMStage, candidates: torch.Tensor,
                 prompt_mask: torch.Tensor) -> None:
        self.stage = stage
        self.candidates = candidates.bool()
        self.prompt_mask = prompt_mask.bool()
        self.prompt_len = int(candidates.shape[1])
        self.state = "armed"
        self.call: dict[str, Any] = {}
        self.kept_valid: torch.Tensor | None = None  # [B, L''max] bool after the prefill
        self.record = PruneRecord()
        self.handles: list[Any] = []

    def __enter__(self) -> _Session:
        lm = self.stage.language_model
        self.handles = [
            lm.register_forward_pre_hook(self._on_model, with_kwargs=True),
            self.stage.query_module.register_forward_hook(self._on_query),
        ]
        for i, layer in enumerate(lm.layers):
            if i >= self.stage.layer:
                hook = functools.partial(self._on_layer, self.stage.kinds[i] == LINEAR)
                self.handles.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.call = {}

    # ------------------------------------------------------------------ hooks
    def _on_model(self, module: Any, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        ids = kwargs.get("input_ids", args[0] if args else None)
        q_len = int((embeds if embeds is not None else ids).shape[1])
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        mask = kwargs.get("attention_mask")
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.dim() != 2):
            raise ValueError("the inner-LLM stage needs generate()'s 2-D padding mask; a prepared "
                             "4-D or per-layer mask (static or compiled cache) is not supported")
        self.call = {}
        if self.state == "armed":
            if cache is None:
                raise ValueError("the inner-LLM stage runs on the prefill of a cached generate() "
                                 "call; use_cache=False is not supported (or pass "
                                 "llm_retention_ratio=1.0 to flashvid.apply)")
            check_cache(cache, self.stage.kinds)
            if cache.get_seq_length() != 0 or q_len != self.prompt_len:
                raise ValueError(
                    f"the inner-LLM stage needs the whole rebuilt prompt ({self.prompt_len} "
                    f"tokens) in one prefill with an empty cache; got {q_len} tokens after "
                    f"{cache.get_seq_length()} cached (prefill chunking is not supported)")
            batch = int((embeds if embeds is not None else ids).shape[0])
            reps = batch // self.candidates.shape[0]
            dev = (embeds if embeds is not None else ids).device
            valid = self.prompt_mask.repeat_interleave(reps, 0).to(dev)
            if mask is not None:
                valid = valid & mask.bool().to(dev)
            self.call = {"mode": "prefill", "valid": valid, "cache": cache,
                         "candidates": self.candidates.repeat_interleave(reps, 0).to(dev)}
            self.state = "prefill"
        elif self.state == "pruned":
            self.call = {"mode": "decode", "mask": mask, "cache": cache, "q_len": q_len}

    def _on_query(self, module: Any, args: Any, output: torch.Tensor) -> None:
        if self.call.get("mode") != "prefill":
            return
        valid = self.call["valid"]
        cols = torch.arange(valid.shape[1], device=valid.device)
        last = torch.where(valid, cols, -1).amax(dim=1)  # last real column per row
        rows = output[torch.arange(output.shape[0], device=output.device), last.to(output.device)]
        self.call["last"] = last
        self.call["query"] = rows.reshape(rows.shape[0], self.stage.heads, self.stage.head_dim)

    def _on_layer(self, linear: bool, module: Any, args: tuple, kwargs: dict) -> Any:
        mode = self.call.get("mode")
        if mode is None or (mode == "decode" and linear):
            return None  # a decoding step's linear-attention mask covers the new tokens only
        if "replace" not in self.call:
            hidden = args[0] if args else kwargs["hidden_states"]
            if mode == "prefill":
                self._prune(hidden, kwargs)
            else:
                self._decode_mask(hidden, kwargs)
        replace = self.call["replace"]
        if linear:
            replace = dict(replace, attention_mask=self.call["linear_mask"])
        for name, value in replace.items():
            if name == "attention_mask" or kwargs.get(name) is not None:
                kwargs[name] = value
        new_hidden = self.call.pop("hidden", None)
        if new_hidden is None:
            return args, kwargs
        if args:
            return (new_hidden, *args[1:]), kwargs
        kwargs["hidden_states"] = new_hidden
        return args, kwargs

    # ------------------------------------------------------------------ prefill
    def _prune(self, hidden: torch.Tensor, kwargs: dict) -> None:
        stage, call = self.stage, self.call
        if "query" not in call:
            raise RuntimeError("the inner-LLM stage did not see layer K-1's query projection")
        valid, last, cache = call["valid"], call["last"], call["cache"]
        batch, length = valid.shape
        cols = torch.arange(length, device=valid.device)
        cos, sin = kwargs["position_embeddings"]
        index_last = last.view(batch, 1)
        cos_last = gather_columns(cos, index_last.to(cos.device), dim=-2)  # [B, 1, d]
        sin_last = gather_columns(sin, index_last.to(sin.device), dim=-2)
        query = call["query"][:, :, None, :]  # [B, H, 1, d]
        query, _ = stage.rope(query, query, cos_last, sin_last)
        keys = _cache_keys(cache, stage.attention_layer)
        key_mask = valid & (cols[None, :] <= last[:, None])
        weights = last_query_attention(query[:, :, 0], keys, key_mask.to(keys.device),
                                       scale=stage.scale)
        candidates = call["candidates"] & (cols[None, :] != last[:, None])
        kept = llm_prune_keep(weights, candidates, stage.ratio, valid)
        width = max(int(k.numel()) for k in kept)
        index = torch.zeros(batch, width, dtype=torch.long, device=valid.device)
        kept_valid = torch.zeros(batch, width, dtype=torch.bool, device=valid.device)
        for b, k in enumerate(kept):
            index[b, width - k.numel():] = k.to(index.device)
            kept_valid[b, width - k.numel():] = True
        self.kept_valid = kept_valid
        fmt = mask_format(stage.language_model.config)
        replace: dict[str, Any] = {
            "attention_mask": build_mask(kept_valid.to(hidden.device), width, fmt, hidden.dtype),
            "position_embeddings": (gather_columns(cos, index, dim=-2),
                                    gather_columns(sin, index, dim=-2)),
        }
        for name in ("position_ids", "cache_position"):
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.shape[-1] == length:
                replace[name] = (gather_columns(value, index, dim=-1) if value.dim() > 1
                                 else torch.arange(width, device=value.device))
        call["replace"] = replace
        # linear-attention layers: the stock 2-D padding mask of their input (None: no padding)
        call["linear_mask"] = None if bool(kept_valid.all()) else kept_valid.long().to(
            hidden.device)
        call["hidden"] = gather_columns(hidden, index, dim=-2)
        self.state = "pruned"
        counts = candidates & valid
        self.record = PruneRecord(counts.sum(1).tolist(), [k.cpu() for k in kept],
                                  valid.sum(1).tolist(), [int(k.numel()) for k in kept],
                                  stage.attention_layer)

    # ------------------------------------------------------------------ decoding
    def _decode_mask(self, hidden: torch.Tensor, kwargs: dict) -> None:
        call = self.call
        cache, q_len, mask = call["cache"], call["q_len"], call["mask"]
        kept = self.kept_valid.to(hidden.device)
        first = next(i for i in range(self.stage.layer, len(self.stage.kinds))
                     if self.stage.kinds[i] == FULL)  # the first full-attention layer >= K
        past = _cache_length(cache, first)
        new_cols = past + q_len - kept.shape[1]  # generated tokens this layer sees
        if mask is None:
            tail = torch.ones(kept.shape[0], new_cols, dtype=torch.bool, device=hidden.device)
        else:
            tail = mask.bool().to(hidden.device)[:, self.prompt_len:]
            if tail.shape[1] != new_cols:
                raise RuntimeError(
                    f"the attention mask covers {tail.shape[1]} generated tokens but layer "
                    f"{self.stage.layer}'s cache expects {new_cols}")
        if kept.shape[0] != tail.shape[0]:
            raise RuntimeError("the batch changed size after the prefill")
        valid = torch.cat([kept, tail], dim=1)
        fmt = mask_format(self.stage.language_model.config)
        call["replace"] = {"attention_mask": build_mask(valid, q_len, fmt, hidden.dtype)}
