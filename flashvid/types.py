"""The result of :func:`flashvid.compress`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Budget, FlashVIDConfig

KIND_ADTS = 0  # an ADTS-selected token, copied bit for bit from the input
KIND_ROOT = 1  # a TSTM tree root kept as-is (its tree aggregated into it, no spatial merge)
KIND_CLUSTER = 2  # a DPC-kNN spatial cluster (mean of its members' tree values)
KIND_NAMES = ("adts", "root", "cluster")


@dataclass(frozen=True)
class CompressedVideo:
    """One video after FlashVID.

    Attributes:
        tokens: [V, D], the input dtype and device, ordered by ``indices``.
        indices: [V] int64, global position t*N + n of each row's representative token (an ADTS
            token, a tree root, or a cluster centre). Sorted ascending; with ``dedupe=False``
            a position can occur twice (published quirks Q2/Q3, ADTS row first).
        kinds: [V] int8, 0 = ADTS-kept, 1 = tree root kept as-is, 2 = spatial cluster.
        source: [F, N] int64, the output row that represents each input token: an ADTS token's
            own row, otherwise the row of the cluster (or kept root) its tree went into. -1
            exactly for the non-ADTS tokens when the merge budget is zero (``alpha=1``, or a
            per-frame budget B with ceil(B * alpha) = B): those are dropped, as published.
        segment_starts: [F] bool, True for the first frame of each DySeg segment.
        parents: [F, N] int64, global position of the previous-frame token a token was merged
            into by TSTM, -1 for tree roots, ADTS tokens and tokens outside any tree.
        budget: the per-frame budget (total, adts, merge) used; in exact-count mode with
            ``num_tokens`` the frames get ``total`` or ``total - 1`` tokens.
        config: the configuration used.
    """

    tokens: torch.Tensor
    indices: torch.Tensor
    kinds: torch.Tensor
    source: torch.Tensor
    segment_starts: torch.Tensor
    parents: torch.Tensor
    budget: Budget
    config: FlashVIDConfig

    @property
    def segment_lengths(self) -> torch.Tensor:
        """[S] int64 frames per DySeg segment (all > 0, summing to F); reading it synchronises
        with the device."""
        starts = self.segment_starts.nonzero().flatten()
        ends = torch.cat([starts[1:], starts.new_tensor([self.segment_starts.numel()])])
        return ends - starts

    @property
    def num_frames(self) -> int:
        return int(self.source.shape[0])

    @property
    def tokens_per_frame(self) -> int:
        return int(self.source.shape[1])

    @property
    def frames(self) -> torch.Tensor:
        """[V] int64 frame of each output row's representative."""
        return torch.div(self.indices, self.tokens_per_frame, rounding_mode="floor")

    @property
    def positions(self) -> torch.Tensor:
        """[V] int64 position inside its frame (raster order) of each row's representative."""
        return self.indices % self.tokens_per_frame

    @property
    def retention(self) -> float:
        """Output rows over input tokens."""
        return self.tokens.shape[0] / max(1, self.source.numel())

    def roots(self) -> torch.Tensor:
        """[F, N] int64 global position of each token's tree root (itself for roots and ADTS
        tokens), found by pointer jumping over ``parents``."""
        flat = self.parents.reshape(-1)
        root = torch.where(flat >= 0, flat, torch.arange(flat.numel(), device=flat.device))
        while True:
            nxt = root[root]
            if torch.equal(nxt, root):
                return root.view_as(self.parents)
            root = nxt

    def counts(self) -> dict[str, int]:
        """Tokens per stage: input, ADTS-kept, tree roots, output rows by kind, duplicates."""
        kinds = self.kinds.tolist()
        return {
            "input": self.source.numel(),
            "adts": kinds.count(KIND_ADTS),
            "merged_by_tstm": int((self.parents >= 0).sum()),
            "roots_kept": kinds.count(KIND_ROOT),
            "clusters": kinds.count(KIND_CLUSTER),
            "output": len(kinds),
            "duplicate_positions": len(kinds) - int(torch.unique(self.indices).numel()),
            "dropped": int((self.source < 0).sum()),
        }

    def to(self, device: torch.device | str) -> CompressedVideo:
        """A copy with every tensor moved to ``device``."""
        return CompressedVideo(
            tokens=self.tokens.to(device), indices=self.indices.to(device),
            kinds=self.kinds.to(device), source=self.source.to(device),
            segment_starts=self.segment_starts.to(device), parents=self.parents.to(device),
            budget=self.budget, config=self.config,
        )

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The tensors by name (for saving)."""
        return {
            "tokens": self.tokens, "indices": self.indices, "kinds": self.kinds,
            "source": self.source, "segment_lengths": self.segment_lengths,
            "parents": self.parents,
        }


class CompressedBatch(list):
    """The results of :func:`flashvid.compress_batch`: a list of :class:`CompressedVideo`, one
    per video, plus the rows of all videos as one flat tensor, the layout an inference engine
    scatters into its embedding buffer.

    Attributes:
        tokens: [sum V_i, D] the rows of every video, video after video (in exact-count mode
            the pipeline's own output, no copy; otherwise concatenated on first access).
        offsets: [B + 1] int64 row offsets (like ``cu_seqlens``): video i is
            ``tokens[offsets[i]:offsets[i + 1]]``.
    """

    def __init__(self, videos: list[CompressedVideo], tokens: torch.Tensor | None = None) -> None:
        super().__init__(videos)
        self._tokens = tokens

    @property
    def tokens(self) -> torch.Tensor:
        if self._tokens is None:
            self._tokens = torch.cat([v.tokens for v in self])
        return self._tokens

    @property
    def offsets(self) -> torch.Tensor:
        device = self[0].tokens.device if len(self) else None
        rows = [0] + [v.tokens.shape[0] for v in self]
        return torch.cumsum(torch.tensor(rows, dtype=torch.long), 0).to(device)
