"""FlashVID for ``Qwen2_5_VLForConditionalGeneration`` (shared logic in ``_qwen.py``).

Qwen2.5-VL specifics: the vision tower runs in window order, so the importance of the merged
tokens is put back in raster order with argsort(window_index) (§3.2); the
<|vision_start|>/<|vision_end|> tokens around the video are kept (§11); the config preset
is :meth:`FlashVIDConfig.qwen2_5_vl` (selection "adts_v1", 4 minimum segments).
"""

from __future__ import annotations

import torch

from ._qwen import QwenVLAdapter


class Qwen2_5_VLAdapter(QwenVLAdapter):
    """FlashVID on a ``Qwen2_5_VLForConditionalGeneration`` instance."""

    family = "qwen2_5_vl"
    window_order = True
    default_drop_markers = False

    def _window_index(self, grid: torch.Tensor) -> torch.Tensor:
        from transformers.vision_utils import get_vision_window_index

        visual = self.base.visual
        index, _ = get_vision_window_index(grid, spatial_merge_size=visual.spatial_merge_size,
                                           window_size=visual.window_size,
                                           patch_size=visual.patch_size)
        return index
