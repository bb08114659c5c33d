"""The vLLM plugin's position bookkeeping (flashvid.integrations.vllm.positions), without vLLM.

A toy prompt: 3 text tokens, an image (unpruned, 2 x 2 grid), 2 text tokens, a pruned video of
5 rows (whose relative positions the encoder output carries), 3 text tokens. The steps are
driven as vLLM 0.32's runner drives them: the rows of each media item that fall into a step,
the first possibly continuing an item begun earlier (chunked prefill, or a cached prefix
ending inside it); media wholly inside a cached prefix gets no call at all.
"""

from __future__ import annotations

import pytest
import torch

from flashvid.integrations.vllm import positions as P

IMAGE, VIDEO, TEXT = 7, 8, 1
IDS = [TEXT] * 3 + [IMAGE] * 4 + [TEXT] * 2 + [VIDEO] * 5 + [TEXT] * 3
IMAGE_REL = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]])
VIDEO_REL = torch.tensor([[0, 0, 2, 4, 4], [0, 1, 1, 0, 2], [1, 2, 0, 3, 3]])  # kept rows
VIDEO_ADVANCE = 6  # the uncompressed video's largest relative position + 1
D = 4


def spans():
    return [P.Span(3, 4, 2, IMAGE_REL), P.Span(9, 5, VIDEO_ADVANCE)]


def expected() -> torch.Tensor:
    """What the LLM must see: text 0..2, image at 3 + rel, text 5, 6, video at 7 + rel, text
    13, 14, 15 (7 + 6)."""
    out = torch.empty(3, len(IDS), dtype=torch.long)
    out[:, :3] = torch.arange(3)
    out[:, 3:7] = IMAGE_REL + 3
    out[:, 7:9] = torch.arange(5, 7)
    out[:, 9:14] = VIDEO_REL + 7
    out[:, 14:] = torch.arange(13, 16)
    return out


def rows(dtype=torch.float32):
    """Encoder outputs: the image with vLLM's 4 stock columns, the video with COLUMNS."""
    image = torch.cat([torch.randn(4, D), IMAGE_REL.T.float(), torch.full((4, 1), 2.0)], dim=1)
    video = torch.cat([torch.randn(5, D), P.encode(VIDEO_REL.T, torch.float32)], dim=1)
    return image.to(dtype), video.to(dtype)


def split(r, pruned):
    if pruned:
        return r[:, :-P.COLUMNS], P.decode(r[:, -P.COLUMNS:])
    return r[:, :-4], None


def step(stored, computed, scheduled, image, video):
    """One runner step over tokens [computed, computed + scheduled)."""
    slices = []
    for (off, length), out in (((3, 4), image), ((9, 5), video)):
        lo, hi = max(computed - off, 0), min(computed + scheduled - off, length)
        if lo < hi:
            slices.append(out[lo:hi])
    embeds, positions, delta = P.recompute(IDS, slices, stored, computed, split=split,
                                           unpruned_token_ids=[IMAGE])
    return embeds, positions, delta


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_encode_is_exact(dtype):
    values = torch.tensor([[0, 1, 255], [256, 257, 4095], [65535, 70000, P.LIMIT - 1]])
    assert torch.equal(P.decode(P.encode(values, dtype)), values.T)
    with pytest.raises(ValueError, match="positions must lie"):
        P.encode(torch.tensor([[-1, 0, 0]]), dtype)


def test_prompt_positions_are_final_outside_pruned_rows():
    stored, delta = P.prompt_positions(len(IDS), spans())
    want = expected()
    outside = torch.ones(len(IDS), dtype=torch.bool)
    outside[9:14] = False
    assert torch.equal(stored[:, outside], want[:, outside])
    assert bool((stored[:, 9:14] < 0).all())  # marked
    assert delta == 16 - len(IDS)


def test_one_step_writes_the_rows():
    stored, _ = P.prompt_positions(len(IDS), spans())
    image, video = rows()
    embeds, positions, delta = step(stored, 0, len(IDS), image, video)
    assert torch.equal(positions, expected())
    assert delta == 16 - len(IDS)
    assert torch.equal(embeds[0], image[:, :D]) and torch.equal(embeds[1], video[:, :D])
    assert bool((stored[:, 9:14] < 0).all())  # the stored tensor is left as it was


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_chunks_give_the_same_positions(chunk):
    stored, _ = P.prompt_positions(len(IDS), spans())
    image, video = rows(torch.bfloat16)
    computed = 0
    while computed < len(IDS):
        scheduled = min(chunk, len(IDS) - computed)
        _, stored, delta = step(stored, computed, scheduled, image, video)
        assert torch.equal(stored[:, :computed + scheduled],
                           expected()[:, :computed + scheduled])
        computed += scheduled
    assert delta == 16 - len(IDS)


@pytest.mark.parametrize("cached", [2, 4, 9, 11, 14, 16])
def test_a_cached_prefix_leaves_the_rest_right(cached):
    """The request's positions after a prefix hit of ``cached`` tokens: media inside the
    prefix gets no call; everything computed gets its final position."""
    stored, _ = P.prompt_positions(len(IDS), spans())
    image, video = rows()
    _, positions, delta = step(stored, cached, len(IDS) - cached, image, video)
    assert torch.equal(positions[:, cached:], expected()[:, cached:])
    assert delta == 16 - len(IDS)
    _, positions, delta = P.recompute(IDS, [], positions, len(IDS), split=split,
                                      unpruned_token_ids=[IMAGE])  # a decoding step
    assert delta == 16 - len(IDS)


def test_a_prompt_ending_in_marked_rows_knows_its_end():
    stored, delta = P.prompt_positions(14, spans())  # the video is the prompt's end
    assert delta == 13 - 14
    assert P.delta_of(stored) == delta


def test_rows_that_do_not_fit_are_refused():
    stored, _ = P.prompt_positions(len(IDS), spans())
    _, video = rows()
    with pytest.raises(RuntimeError, match="overrun|do not fit"):
        P.recompute(IDS, [torch.cat([video, video])], stored, 9, split=split,
                    unpruned_token_ids=[IMAGE])
    with pytest.raises(ValueError, match="does not fit"):
        P.prompt_positions(10, spans())
