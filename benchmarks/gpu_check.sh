#!/usr/bin/env bash
# One-shot GPU check of the project, for a machine with an NVIDIA GPU, the project's tree, a
# Python with torch + triton (+ pytest, hypothesis) and no internet. Nothing is installed: the
# tree is used through PYTHONPATH. Under 8 minutes in all (each step has a time cap):
#   1. device and versions                          -> env.json
#   2. compiled kernel + parity tests, 3 dtypes      -> pytest.log, pytest.xml
#   3. kernel times at the preset shapes (bf16)      -> kernels.json
#   4. flashvid bench, 4 presets + 1024 frames, bf16 -> bench.log and the bench's own files
#   5. compile report with this machine's Triton    -> report.jsonl (if time is left)
# Results go to benchmarks/results/<device>/ (e.g. nvidia-h200), and to $OUT when it is set
# (a tarball of the folder plus the small files, at most 8 files).
#
#   bash benchmarks/gpu_check.sh            # PYTHON=python3 by default
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
BUDGET=${GPU_CHECK_BUDGET_S:-470}  # the whole script, seconds
left() { echo $((BUDGET - SECONDS)); }
capped() {  # capped SECONDS CMD...: run CMD with at most SECONDS (and never past the budget)
    local cap=$1; shift
    local t; t=$(left); ((t < cap)) && cap=$t
    if ((cap < 5)); then echo "[gpu_check] skipped (budget spent): $*"; return 124; fi
    timeout --kill-after=10 "$cap" "$@"
}

DEVICE=$($PY -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '-', \
torch.cuda.get_device_name(0).lower()).strip('-'))") || { echo "no CUDA device"; exit 2; }
RES="benchmarks/results/$DEVICE"
mkdir -p "$RES"
echo "[gpu_check] $DEVICE -> $RES ($(date -u +%FT%TZ))"

# 1. environment ------------------------------------------------------------------------------
$PY - "$RES/env.json" <<'EOF'
import json, platform, subprocess, sys, torch, triton
p = torch.cuda.get_device_properties(0)
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,"
                      "clocks.max.sm", "--format=csv,noheader"], capture_output=True, text=True)
git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
env = {"device": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
       "sms": p.multi_processor_count, "memory_gb": round(p.total_memory / 2**30, 1),
       "nvidia_smi": smi.stdout.strip(), "torch": torch.__version__, "cuda": torch.version.cuda,
       "triton": triton.__version__, "python": platform.python_version(), "git": git or None,
       "commands": {
           "tests": "pytest -q -n 8 tests/kernels/test_kernels.py tests/core/test_backends.py tests/core/test_parity.py",
           "bench": "flashvid bench --device cuda --dtype bfloat16 --preset llava_onevision "
                    "--preset llava_video --preset qwen2_5_vl --preset qwen3_vl "
                    "--shape 1024x196x3584 --out benchmarks/results/<device>"}}
json.dump(env, open(sys.argv[1], "w"), indent=1)
print(json.dumps(env, indent=1))
EOF

# 2. compiled kernels and parity, float32/float16/bfloat16 (Triton compiles on first launch: the
# tests run in 8 processes so that compilation is parallel; the cache is shared) ---------------
XDIST=""
$PY -c "import xdist" 2>/dev/null && XDIST="-n 8"
capped 210 $PY -m pytest -q -ra $XDIST --durations=15 --junitxml="$RES/pytest.xml" \
    tests/kernels/test_kernels.py tests/core/test_backends.py tests/core/test_parity.py 2>&1 | tee "$RES/pytest.log"
TESTS_RC=${PIPESTATUS[0]}
echo "[gpu_check] tests exit $TESTS_RC"

# 3. kernel times: each launcher alone and the three in one CUDA graph, median of do_bench ------
capped 60 $PY - "$RES/kernels.json" <<'EOF' 2>&1 | tee "$RES/kernels.log"
import json, math, sys, torch
from triton.testing import do_bench
import flashvid_kernels as K
from flashvid_kernels._runtime import recording

SHAPES = [("llava_onevision", 32, 196, 3584, "adts"), ("llava_video", 64, 169, 3584, "adts"),
          ("qwen2_5_vl", 16, 1024, 3584, "adts_v1"), ("qwen3_vl", 16, 1024, 4096, "adts_v1"),
          ("long", 1024, 196, 3584, "adts")]
HBM = 4.3e12  # bytes/s, device-to-device copy measured on an H200 of this workplace
rows = []
for name, f, n, d, sel in SHAPES:
    k = math.ceil(min(n, math.ceil(n * 0.10 * 1.25)) * 0.7)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(f, n, d, device="cuda", dtype=torch.bfloat16, generator=g)
    a = torch.rand(f, n, device="cuda", generator=g) * 1e6
    mu = x.float().mean(dim=1)
    elig = torch.rand(f, n, device="cuda", generator=g) > 0.1
    start = torch.zeros(f, dtype=torch.bool, device="cuda"); start[::4] = True
    use_e = sel == "adts"
    norms, event = K.token_stats(x, mu if use_e else None)
    stats = lambda: K.token_stats(x, mu if use_e else None)
    adts = lambda: K.adts_select(x, a, k, not use_e, event=event, norms=norms)
    tstm = lambda: K.tstm_edges(x, elig, start, norms=norms)
    def all3():
        nn, ev = K.token_stats(x, mu if use_e else None)
        K.adts_select(x, a, k, not use_e, event=ev, norms=nn)
        K.tstm_edges(x, elig, start, norms=nn)
    with recording() as launches:
        all3()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated(); torch.cuda.reset_peak_memory_stats()
    all3(); torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        all3()
    row = {"shape": name, "frames": f, "tokens": n, "dim": d, "k": k, "selection": sel,
           "dtype": "bfloat16", "launches": len(launches),
           "programs": [math.prod(l.grid) for l in launches],
           "stats_us": do_bench(stats, return_mode="median") * 1e3,
           "adts_us": do_bench(adts, return_mode="median") * 1e3,
           "tstm_us": do_bench(tstm, return_mode="median") * 1e3,
           "graph_us": do_bench(graph.replay, return_mode="median") * 1e3,
           "peak_extra_mib": round(peak, 1),
           "read_floor_us": x.numel() * x.element_size() / HBM * 1e6}
    rows.append(row)
    print(" ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in row.items()))
json.dump(rows, open(sys.argv[1], "w"), indent=1)
EOF

# 4. the stage benchmark (reference / torch / triton, with peak memory) ------------------------
capped $(( $(left) > 70 ? $(left) - 60 : $(left) )) $PY -m flashvid bench --device cuda \
    --dtype bfloat16 --preset llava_onevision --preset llava_video --preset qwen2_5_vl \
    --preset qwen3_vl --shape 1024x196x3584 --out "$RES" 2>&1 | tee "$RES/bench.log"
echo "[gpu_check] bench exit ${PIPESTATUS[0]}"

# 5. what this machine's Triton makes of the kernels (registers, spills) -----------------------
capped 55 $PY -m flashvid_kernels.report --json --arch 90 --jobs 16 > "$RES/report.jsonl" \
    2> "$RES/report.log"
echo "[gpu_check] report exit $?"

echo "[gpu_check] done in ${SECONDS}s; results in $RES"
if [[ -n "${OUT:-}" ]]; then
    tar -czf "$OUT/results.tar.gz" -C benchmarks/results "$DEVICE"
    cp "$RES/env.json" "$RES/pytest.log" "$RES/kernels.json" "$RES/bench.log" "$OUT/" 2>/dev/null
    ls -la "$OUT"
fi
exit "$TESTS_RC"
