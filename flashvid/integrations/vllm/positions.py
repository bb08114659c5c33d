"""M-RoPE positions of a request with pruned media, kept with the request (no vLLM import).

vLLM 0.32 asks the model twice about a Qwen request's positions:

* ``get_mrope_input_positions(prompt_ids, mm_features)`` once, when the request is added; the
  [3, L] result is stored with the request (``req_state.mrope_positions``) together with the
  decode offset ``delta``;
* ``recompute_mrope_positions(prompt_ids, slices, stored, num_computed_tokens)`` in every step,
  with the encoder output rows of the media that this step computes (``slices``: the rows of
  each media item that fall into the step, in prompt order). What it returns replaces the
  stored positions and ``delta``.

With a prefix-cache hit, the cached part of the prompt is never computed again: its media get
no recompute call at all (the encoder does not even run for a video whose every token is
cached). So everything the rest of the prompt needs must already be in the stored positions:
:func:`prompt_positions` writes the final positions of all text and of every media item whose
positions do not depend on the encoder (images, which are not pruned), and the text after a
pruned item starts after the item's *uncompressed* extent, known from its grid (as without
pruning). Only the rows of pruned items (which rows a video keeps is known once the encoder
ran) are left open, as *markers*: negative values that say, for row r of an item placed at
base position b and followed by text at position e,

    channel 0 = -(r + 1),  channel 1 = -(b + 1),  channel 2 = -(e + 1)

Markers are never given to the LLM: a marked row is computed only in a step that gathers its
encoder rows, and :func:`recompute` then overwrites it with ``b`` + the row's own position,
which the row carries in its last columns (:func:`encode`, exact in any float dtype). Tokens
that are never computed (cached) keep their markers, which nothing reads.

Everything here is a function of data that belongs to the request (its prompt, its stored
positions, the rows handed in): no memory across calls, no hook order, no tensor identity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

DIGIT = 256  # integers 0..255 are exact in bfloat16, float16 and float32
DIGITS = 3  # per channel: positions up to 256 ** 3 - 1
COLUMNS = 3 * DIGITS  # extra columns of a pruned row: its (t, h, w) position, base-256 digits
LIMIT = DIGIT ** DIGITS


def encode(positions: torch.Tensor, dtype: torch.dtype, device: torch.device | str | None = None
           ) -> torch.Tensor:
    """[n, 3] non-negative int positions -> [n, COLUMNS] float columns of ``dtype`` (base-256
    digits, most significant first per channel), exact in any float dtype."""
    pos = positions.to(dtype=torch.long)
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= LIMIT):
        raise ValueError(f"M-RoPE positions must lie in [0, {LIMIT}), got "
                         f"[{int(pos.min())}, {int(pos.max())}]")
    digits = []
    for channel in range(3):
        value = pos[:, channel]
        for power in reversed(range(DIGITS)):
            digits.append((value // DIGIT ** power) % DIGIT)
    return torch.stack(digits, dim=1).to(dtype=dtype, device=device)


def decode(columns: torch.Tensor) -> torch.Tensor:
    """[n, COLUMNS] columns of :func:`encode` -> [3, n] int64 positions."""
    digits = columns.to(torch.float64).round().long().view(-1, 3, DIGITS)
    weights = torch.tensor([DIGIT ** p for p in reversed(range(DIGITS))], device=digits.device)
    return (digits * weights).sum(dim=-1).T.contiguous()


@dataclass(frozen=True)
class Span:
    """One media item of a prompt.

    Attributes:
        offset, length: its placeholder run in the prompt.
        advance: how far the text after it moves on from the position the item starts at (the
            uncompressed item's largest relative position + 1).
        positions: [3, length] relative positions when they are known before the encoder runs
            (media that is not pruned); None for a pruned item (rows marked, see module doc).
    """

    offset: int
    length: int
    advance: int
    positions: torch.Tensor | None = None


def prompt_positions(length: int, spans: Sequence[Span]) -> tuple[torch.Tensor, int]:
    """[3, length] int64 positions of a prompt and its decode offset ``delta`` (the position of
    the first generated token minus ``length``): text advances by one on all channels, media
    per :class:`Span`, pruned rows marked."""
    out = torch.empty(3, length, dtype=torch.long)
    current, cursor = 0, 0
    for span in sorted(spans, key=lambda s: s.offset):
        if span.offset < cursor or span.offset + span.length > length or span.length <= 0:
            raise ValueError(f"media placeholder at {span.offset} (+{span.length}) does not fit "
                             f"a prompt of {length} tokens after {cursor}")
        gap = span.offset - cursor
        out[:, cursor:span.offset] = torch.arange(current, current + gap)
        current += gap
        end = span.offset + span.length
        if span.positions is not None:
            if tuple(span.positions.shape) != (3, span.length):
                raise ValueError(f"positions {tuple(span.positions.shape)} for a media run of "
                                 f"{span.length} tokens")
            out[:, span.offset:end] = span.positions.to(torch.long) + current
        else:
            rows = torch.arange(span.length)
            out[0, span.offset:end] = -(rows + 1)
            out[1, span.offset:end] = -(current + 1)
            out[2, span.offset:end] = -(current + span.advance + 1)
        current += span.advance
        cursor = end
    out[:, cursor:] = torch.arange(current, current + length - cursor)
    current += length - cursor
    return out, current - length


def delta_of(positions: torch.Tensor) -> int:
    """The decode offset of stored positions: after the last prompt token (a marked last row
    says where the text after its item starts)."""
    length = positions.shape[1]
    if length == 0:
        return 0
    last = positions[:, -1]
    if int(last[0]) < 0:
        return -int(last[2]) - 1 - length
    return int(last.max()) + 1 - length


def _is_marked(positions: torch.Tensor, p: int) -> bool:
    return int(positions[0, p]) < 0


def _row_of(positions: torch.Tensor, p: int) -> int:
    return -int(positions[0, p]) - 1


# A row split into (embeddings, relative positions [3, n] or None for an unpruned item).
Split = Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor | None]]


def recompute(input_ids: Sequence[int] | torch.Tensor, slices: Sequence[torch.Tensor],
              stored: torch.Tensor, num_computed_tokens: int, *, split: Split,
              unpruned_token_ids: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor, int]:
    """vLLM's ``recompute_mrope_positions`` over positions made by :func:`prompt_positions`.

    Args:
        input_ids: the prompt's token ids.
        slices: encoder rows of the media items this step computes, in prompt order; the first
            may continue an item begun in an earlier step (chunked prefill, or a cached prefix
            ending inside it).
        stored: the request's positions [3, L] (not modified).
        num_computed_tokens: prompt tokens computed before this step.
        split: ``split(rows, pruned)`` -> (embeddings without the extra columns, the rows'
            positions relative to their item [3, n] for a pruned item, else None).
        unpruned_token_ids: placeholder token ids of media that is not pruned (image pads):
            their runs are the unmarked media items.

    Returns:
        (embeddings per slice, positions [3, L], delta).
    """
    positions = stored.clone()
    if not slices:
        return [], positions, delta_of(positions)
    ids = torch.as_tensor(list(input_ids) if not isinstance(input_ids, torch.Tensor)
                          else input_ids.cpu(), dtype=torch.long)
    length = ids.numel()
    plain = torch.isin(ids, torch.as_tensor(list(unpruned_token_ids), dtype=torch.long))
    plain_start = plain.clone()
    plain_start[1:] &= ~(plain[1:] & (ids[1:] == ids[:-1]))
    starts = ((positions[0] == -1) | plain_start).nonzero().flatten().tolist()
    out = []
    cursor = num_computed_tokens
    for i, rows in enumerate(slices):
        n = int(rows.shape[0])
        if i == 0 and cursor < length and (
                (_is_marked(positions, cursor) and _row_of(positions, cursor) > 0)
                or (bool(plain[cursor]) and not bool(plain_start[cursor]))):
            start = cursor  # continues an item begun before this step
        else:
            start = next((s for s in starts if s >= cursor), None)
            if start is None:
                raise RuntimeError(f"FlashVID positions: media rows {i} of this step have no "
                                   f"placeholder at or after token {cursor}")
        if start + n > length:
            raise RuntimeError(f"FlashVID positions: {n} media rows at token {start} overrun "
                               f"the prompt of {length} tokens")
        pruned = _is_marked(positions, start)
        embeds, rel = split(rows, pruned)
        if pruned:
            first = _row_of(positions, start)
            base = -int(positions[1, start]) - 1
            rows_here = -positions[0, start:start + n] - 1
            if bool((positions[0, start:start + n] >= 0).any()) or not torch.equal(
                    rows_here, torch.arange(first, first + n)):
                raise RuntimeError(f"FlashVID positions: {n} rows at token {start} do not fit "
                                   "their item's placeholder run")
            if rel is None or tuple(rel.shape) != (3, n):
                raise RuntimeError("FlashVID positions: a pruned item's rows carry no "
                                   "positions")
            positions[:, start:start + n] = rel.to(positions.device, torch.long) + base
        out.append(embeds)
        cursor = start + n
    return out, positions, delta_of(positions)
