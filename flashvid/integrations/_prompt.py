"""Pure functions that rebuild a prompt whose video placeholder runs change length.

No model, no state: tensors in, tensors out (vocabulary in ``_records.py``: columns, slots,
entries).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


def bind_call(signature: inspect.Signature, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by name (``**kwargs`` flattened in)."""
    if not args:
        return dict(kwargs)
    call = dict(signature.bind(*args, **kwargs).arguments)
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in call:
            call.update(call.pop(name))
    return call


def restore_prompt(output: Any, original_ids: torch.Tensor, compressed_len: int) -> Any:
    """generate() output with the caller's prompt in front of the new tokens (as stock)."""
    def fix(seqs: torch.Tensor) -> torch.Tensor:
        new = seqs[:, compressed_len:]
        prompt = original_ids.to(seqs.device)
        if prompt.shape[0] != seqs.shape[0]:  # num_return_sequences / beams expand the batch
            prompt = prompt.repeat_interleave(seqs.shape[0] // prompt.shape[0], dim=0)
        return torch.cat([prompt, new], dim=1)

    if isinstance(output, torch.Tensor):
        return fix(output)
    sequences = getattr(output, "sequences", None)
    if isinstance(sequences, torch.Tensor):
        output.sequences = fix(sequences)
    return output


def pad_flags(flags: list[torch.Tensor], length: int, side: str) -> torch.Tensor:
    """Per-row bool flags [L'_b] of the unpadded rebuilt rows -> [B, length] bool, padded with
    False on ``side`` like :func:`gather_rows`."""
    out = torch.zeros(len(flags), length, dtype=torch.bool)
    for b, f in enumerate(flags):
        n = int(f.numel())
        if side == "left":
            out[b, length - n:] = f.cpu()
        else:
            out[b, :n] = f.cpu()
    return out


def as_mask(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] bool mask of real tokens; checks the shape of a given mask."""
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; expected the shape of "
            f"input_ids {tuple(input_ids.shape)} (a 2-D padding mask)")
    return attention_mask.bool()


def assign_slots(input_ids: torch.Tensor, mask: torch.Tensor, token_id: int,
                 counts: Sequence[int], what: str) -> list[tuple[int, torch.Tensor]]:
    """Give each video its placeholder columns, in the order the model fills them.

    Args:
        input_ids: [B, L] int64 prompt; ``mask`` [B, L] bool real tokens.
        token_id: the video placeholder id.
        counts: placeholders each video occupies in the stock prompt, in video order.
        what: a description of the expected counts for error messages.

    Returns:
        per video: (batch row, [count] int64 columns, ascending).
    """
    is_slot = (input_ids == token_id) & mask
    rows = [is_slot[b].nonzero().flatten() for b in range(input_ids.shape[0])]
    per_row = [int(r.numel()) for r in rows]
    if sum(per_row) != sum(counts):
        raise ValueError(
            f"the prompt holds {sum(per_row)} video placeholder tokens (per sample {per_row}) "
            f"but the videos need {sum(counts)} ({list(counts)}, {what}); build the prompt with "
            "the model's processor for exactly these videos")
    out: list[tuple[int, torch.Tensor]] = []
    row, offset = 0, 0
    for count in counts:
        while row < len(rows) and offset == per_row[row]:
            row, offset = row + 1, 0
        if row >= len(rows) or offset + count > per_row[row]:
            raise ValueError(
                f"a video's {count} placeholder tokens straddle two samples (per-sample counts "
                f"{per_row}, per-video counts {list(counts)}); each video must lie in one sample")
        out.append((row, rows[row][offset:offset + count]))
        offset += count
    return out


def assemble_rows(mask: torch.Tensor, dropped: torch.Tensor,
                  videos: list[tuple[int, torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
    """The entries of every rebuilt row.

    Args:
        mask: [B, L] bool real tokens of the caller's prompt.
        dropped: [B, L] bool columns to remove: every video slot, plus e.g. Qwen3-VL markers.
        videos: per video (row, keys [V'], values [V']): the entries that represent the video
            (an original column or -1) and the original column each is placed at. Entries with
            equal keys keep their order.

    Returns:
        per sample, [L'_b] int64 entries in sequence order.
    """
    rows = []
    for b in range(mask.shape[0]):
        text = (mask[b] & ~dropped[b]).nonzero().flatten()
        keys = [text]
        values = [text]
        for row, vkeys, vvalues in videos:
            if row == b:
                keys.append(vkeys)
                values.append(vvalues)
        key = torch.cat(keys)
        order = torch.sort(key, stable=True).indices
        rows.append(torch.cat(values)[order])
    return rows


def pad_side(mask: torch.Tensor) -> str:
    """"right" if any row ends in padding while starting with a token, else "left"."""
    if mask.shape[1] and bool((~mask[:, -1] & mask[:, 0]).any()):
        return "right"
    return "left"


def gather_rows(x: torch.Tensor, entries: list[torch.Tensor], *, new_value: int, pad_value: int,
                side: str, batch_dim: int = 0) -> torch.Tensor:
    """Rebuild a per-column tensor: x [..., B, L] (batch at ``batch_dim``, columns last) ->
    [..., B, L'] with ``x[b, e]`` for entries e >= 0, ``new_value`` for -1 and ``pad_value`` in
    the padding (on ``side``)."""
    length = max((int(e.numel()) for e in entries), default=0)
    shape = list(x.shape)
    shape[-1] = length
    out = torch.full(shape, pad_value, dtype=x.dtype, device=x.device)
    for b, e in enumerate(entries):
        e = e.to(x.device)
        src = x.select(batch_dim, b)
        vals = src[..., e.clamp_min(0)]
        vals = torch.where(e >= 0, vals, torch.full_like(vals, new_value))
        n = int(e.numel())
        dst = out.select(batch_dim, b)
        if side == "left":
            dst[..., length - n:] = vals
        else:
            dst[..., :n] = vals
    return out


def rebuild_text_inputs(inputs: dict[str, Any], entries: list[torch.Tensor], token_id: int,
                        pad_id: int, side: str, token_type: int = 2) -> dict[str, Any]:
    """input_ids, attention_mask, mm_token_type_ids, token_type_ids and labels of the rebuilt
    prompt (whichever the caller gave); -1 entries become video placeholders."""
    ids = inputs["input_ids"]
    out = dict(inputs)
    out["input_ids"] = gather_rows(ids, entries, new_value=token_id, pad_value=pad_id, side=side)
    ones = torch.ones_like(ids)
    mask_dtype = inputs["attention_mask"].dtype if inputs.get("attention_mask") is not None \
        else torch.long
    out["attention_mask"] = gather_rows(ones, entries, new_value=1, pad_value=0,
                                        side=side).to(mask_dtype)
    if inputs.get("mm_token_type_ids") is not None:
        out["mm_token_type_ids"] = gather_rows(inputs["mm_token_type_ids"], entries,
                                               new_value=token_type, pad_value=0, side=side)
    if inputs.get("token_type_ids") is not None:
        out["token_type_ids"] = gather_rows(inputs["token_type_ids"], entries, new_value=0,
                                            pad_value=0, side=side)
    if inputs.get("labels") is not None:
        out["labels"] = gather_rows(inputs["labels"], entries, new_value=IGNORE_INDEX,
                                    pad_value=IGNORE_INDEX, side=side)
    return out


def reject(inputs: dict[str, Any], names: Sequence[str], why: str) -> None:
    """ValueError if any of ``names`` is given (not None) in ``inputs``."""
    for name in names:
        if inputs.get(name) is not None:
            raise ValueError(
                f"`{name}` cannot be combined with a FlashVID-patched video call: {why}")
