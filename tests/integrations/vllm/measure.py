r"""Start-up and per-request cost of the FlashVID plugin on vLLM's CPU build (for the README).

    .venv-vllm/bin/python tests/integrations/vllm/measure.py \
        [--frames 16 --rows 8 --cols 12 --repeats 5]

One process per engine configuration (off, FlashVID, EVS), each in vLLM's default
multi-process mode (the engine core in its own process, as ``vllm serve`` runs it) unless
``--in-process``. Each reports the engine start-up time and the median latency of a one-token
request with one video (encoder cache reset before each request, so the video is encoded every
time), and checks the prompt length against the exact count.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent


def run_one(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(HERE))
    import harness
    import tiny_models

    if args.in_process:
        harness.in_process()
    start = time.perf_counter()
    from vllm import LLM, SamplingParams

    imported = time.perf_counter() - start
    extra = {"off": {}, "evs": {"video_pruning_rate": 1 - args.retention * 1.25},
             "flashvid": {"additional_config": {"flashvid": {"retention_ratio": args.retention}}}}
    engine_args = dict(harness.ENGINE_ARGS, **extra[args.mode])
    if not args.in_process:  # vLLM's defaults: engine core and worker in their own processes
        engine_args.pop("distributed_executor_backend")
        # the CPU worker reserves this share of the machine's memory and refuses to start when
        # less is free; 2 GiB of 24 is plenty for the tiny models
        engine_args["gpu_memory_utilization"] = 0.1
    start = time.perf_counter()
    llm = LLM(model=str(args.checkpoint), **engine_args)
    started = time.perf_counter() - start
    params = SamplingParams(max_tokens=1, temperature=0.0)
    timers = llm.apply_model(_time_hooks)[0] if args.in_process else None
    latencies, lengths = [], []
    for seed in range(args.repeats + 1):
        clip = harness.video(args.family, args.frames, args.rows, args.cols, seed)
        llm.llm_engine.reset_encoder_cache()
        start = time.perf_counter()
        out = llm.generate([harness.prompt([clip])], params, use_tqdm=False)[0]
        if seed:  # the first request warms up
            latencies.append(time.perf_counter() - start)
        elif timers is not None:
            for value in timers.values():
                value.clear()
        lengths.append(sum(1 for t in out.prompt_token_ids
                           if t == tiny_models.special_ids()["<|video_pad|>"]))
    result = {"mode": args.mode, "import_s": imported, "start_s": started,
              "request_median_s": statistics.median(latencies),
              "request_min_s": min(latencies), "video_tokens": lengths[0]}
    for name, values in (timers or {}).items():
        result[f"{name}_median_s"] = statistics.median(values) if values else 0.0
    return result


def _time_hooks(model) -> dict:
    """Time the model's video encoding (vision tower, plus FlashVID's importance when on) and
    its pruning hook (FlashVID or EVS: compression and positions) per call (in-process only)."""
    timers = {"encode": [], "hook": []}
    for name, method in (("encode", "_process_video_input"),
                         ("hook", "_postprocess_video_embeds_evs")):
        inner = getattr(model, method)

        def timed(*args, _inner=inner, _name=name):
            start = time.perf_counter()
            out = _inner(*args)
            timers[_name].append(time.perf_counter() - start)
            return out

        setattr(model, method, timed)
    return timers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="qwen2_5_vl")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=12)
    parser.add_argument("--retention", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print("RESULT " + json.dumps(run_one(args)), flush=True)
        return
    sys.path.insert(0, str(HERE))
    import tiny_models

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = tiny_models.build(args.family, Path(tmp) / args.family)
        t, n = args.frames // 2, args.rows * args.cols
        print(f"{args.family}: {args.frames} frames = {t} temporal patches x {n} tokens "
              f"({t * n} video tokens), retention {args.retention}")
        for mode in ("off", "flashvid", "evs"):
            cmd = [sys.executable, __file__, "--mode", mode, "--checkpoint", str(checkpoint)]
            cmd += [f"--{k}={v}" for k, v in (("family", args.family), ("frames", args.frames),
                                               ("rows", args.rows), ("cols", args.cols),
                                               ("retention", args.retention),
                                               ("repeats", args.repeats))]
            if args.in_process:
                cmd.append("--in-process")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-3000:], proc.stderr[-3000:])
                raise SystemExit(f"{mode} failed")
            result = json.loads(line[len("RESULT "):])
            if mode == "flashvid":
                want = t * min(n, math.ceil(n * args.retention * 1.25))
                assert result["video_tokens"] == want, (result, want)
            hooks = "".join(f"  {k[:-9]} {1000 * v:6.1f} ms" for k, v in result.items()
                            if k in ("encode_median_s", "hook_median_s"))
            print(f"{mode:9s} import {result['import_s']:5.1f} s  start {result['start_s']:5.1f} s"
                  f"  request median {1000 * result['request_median_s']:7.1f} ms"
                  f" (min {1000 * result['request_min_s']:6.1f})"
                  f"  video tokens {result['video_tokens']}{hooks}", flush=True)


if __name__ == "__main__":
    main()
