"""Measurements of the adapters' inner-LLM stage (§10), quoted in the README.

    python -m benchmarks.llm_stage retention   # layer-averaged retention per preset
    python -m benchmarks.llm_stage prefill     # prefill time and FLOPs with / without the stage

``retention``: the vision side is ``flashvid.compress`` on the seeded synthetic clip at each
preset's shape (feature dim 256); the stage keeps ``ceil(V' * llm_retention_ratio)`` from layer
K on. ``prefill``: a small random LLaVA-OneVision (tiny SigLIP, Qwen2 language model with 28
layers, hidden 256) and one 32-frame video at r = 0.10; the language model's prefill call is
timed in process CPU time on one thread (median, the two settings interleaved; wall time on a
shared machine is noise) and its FLOPs counted from the per-layer lengths
(2 * parameters * tokens + 4 * L_q * L_k * hidden for attention).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import flashvid
from flashvid.synthetic import synthetic_clip

SHAPES = {"llava_onevision": (32, 196, 28), "llava_video": (64, 169, 28),
          "qwen2_5_vl": (16, 256, 28), "qwen3_vl": (16, 256, 36)}  # frames, tokens, layers


def retention() -> None:
    print("| preset (K / layers, ratio) | F × N | r | vision side | from layer K "
          "| layer-averaged |")
    print("|---|---|---|---|---|---|")
    for name, (frames, per_frame, layers) in SHAPES.items():
        tokens, attn = synthetic_clip(frames, per_frame, 256, seed=0)
        for r in (0.10, 0.25):
            cfg = getattr(flashvid.FlashVIDConfig, name)(retention_ratio=r)
            kept = flashvid.compress(tokens, attn, cfg).tokens.shape[0]
            cand = kept + (frames if name == "llava_video" else 0)  # per-frame newlines count
            late = math.ceil(cand * cfg.llm_retention_ratio)
            full, k = frames * per_frame, cfg.pruning_layer
            avg = (k * cand + (layers - k) * late) / (layers * full)
            print(f"| {name} ({k}/{layers}, {cfg.llm_retention_ratio}) | {frames} × {per_frame} "
                  f"| {r:.2f} | {cand} ({cand / full:.1%}) | {late} ({late / full:.1%}) "
                  f"| **{avg:.1%}** |")


def prefill(repeats: int = 9) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import vlm_builders as vb
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(0)
    torch.set_num_threads(1)  # CPU time of one thread: stable on a shared machine
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, image_size=54, patch_size=2,
                                vision_use_head=False)
    text = Qwen2Config(vocab_size=128, hidden_size=256, intermediate_size=768,
                       num_hidden_layers=28, num_attention_heads=8, num_key_value_heads=2,
                       max_position_embeddings=8192, pad_token_id=0, eos_token_id=2,
                       bos_token_id=1)
    cfg = LlavaOnevisionConfig(vision_config=vision, text_config=text, image_token_index=100,
                               video_token_index=101, vision_feature_layer=-1,
                               vision_feature_select_strategy="full")
    cfg._attn_implementation = "sdpa"
    model = LlavaOnevisionForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = 0
    inputs = vb.llava_inputs([32], seed=1)
    lm = model.model.language_model
    params = sum(p.numel() for p in lm.layers[0].parameters())
    settings = {"without the stage": {"llm_retention_ratio": 1.0},
                "with the stage (K = 20, 0.3)": {}}
    times: dict[str, list[float]] = {name: [] for name in settings}
    lengths: dict[str, list[int]] = {}
    for _ in range(repeats):
        for name, kw in settings.items():
            probe = _Probe(lm)
            with flashvid.apply(model, retention_ratio=0.10, **kw):
                model.generate(**inputs, max_new_tokens=1)
            probe.remove()
            times[name].append(probe.end - probe.start)
            lengths[name] = probe.inputs()
    print("| language-model prefill | tokens, layers 0–19 → 20–27 | GFLOPs | CPU time (ms) |")
    print("|---|---|---|---|")
    base = None
    for name in settings:
        seen = lengths[name]
        flops = sum(2 * params * n + 4 * n * n * text.hidden_size for n in seen)
        median = statistics.median(times[name][1:])
        base = base or (flops, median)
        print(f"| {name} | {seen[0]} → {seen[-1]} | {flops / 1e9:.1f} ({flops / base[0]:.2f}×) "
              f"| {median * 1e3:.0f} ({median / base[1]:.2f}×) |")


class _Probe:
    """Times the language model's first call; records each decoder layer's output length."""

    def __init__(self, lm) -> None:
        self.start = self.end = 0.0
        self.outputs: list[int] = []
        self.layers = len(lm.layers)
        self.handles = [lm.register_forward_pre_hook(self._start),
                        lm.register_forward_hook(self._end)]
        self.handles += [layer.register_forward_hook(self._layer) for layer in lm.layers]

    def _start(self, *args) -> None:
        self.start = self.start or time.process_time()

    def _end(self, *args) -> None:
        self.end = self.end or time.process_time()

    def _layer(self, module, args, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        self.outputs.append(int(hidden.shape[1]))

    def inputs(self) -> list[int]:
        """Tokens entering each layer in the prefill (layer 0: the prompt)."""
        out = self.outputs[:self.layers]
        return out[:1] + out[:-1]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("retention", "prefill"))
    args = parser.parse_args()
    retention() if args.what == "retention" else prefill()


if __name__ == "__main__":
    main()
