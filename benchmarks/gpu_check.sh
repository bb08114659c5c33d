#!/usr/bin/env bash
# The GPU check of the project in one command, for a machine with an NVIDIA GPU, the project's
# tree and a Python with torch + triton + pytest + hypothesis (no internet, nothing installed:
# the tree is used through PYTHONPATH). Every step has a time cap; the whole run stays under
# 8 minutes (GPU_CHECK_BUDGET_S, default 470 s):
#   1. device and versions                                      -> env.json
#   2. the kernel tests on CUDA against the reference (indices exact in float32; half inputs
#      through the tensor cores, tie-aware), backend and parity tests -> pytest.log, pytest.xml
#   3. the kernel tests again with program ids remapped on the device (reversed, a seeded
#      permutation)                                             -> order-*.log
#   4. compress in exact-count mode captured in a CUDA graph, replayed on new inputs -> graph.json
#   5. each kernel and compress at the four presets (CUDA events, median of 50), ratios to the
#      reference, the torch backend and the Gram-matmul floor   -> timing.json
#   6. peak memory of compress at 32, 320 and 1024 frames        -> memory.json
#   7. flashvid bench at the presets (its own floors, 50 repeats) -> bench.log, bench.jsonl/csv
#   8. the compile report and protocol audit with this machine's Triton -> report.txt
# Results go to benchmarks/results/<device>/ (e.g. nvidia-h200) with summary.txt; with $OUT set,
# also a tarball and the small files there.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (PYTHON=python3)
#   bash benchmarks/gpu_check.sh --dry-run       # any CPU machine: the same steps under
#        TRITON_INTERPRET=1 on tiny shapes, to prove the script itself works (not the GPU);
#        results in ${TMPDIR:-/tmp}/flashvid-gpu-check-dry-run unless --out DIR is given
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
DRY=0
RES=""
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --out) RES=$2; shift ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument $1 (expected --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset FLASHVID_KERNELS_PROGRAM_ORDER FLASHVID_KERNELS_GPU_PLAN
BUDGET=${GPU_CHECK_BUDGET_S:-470}
left() { echo $((BUDGET - SECONDS)); }
FAILED=()
STATUS=()
exec 3>&1  # the status lines go to the terminal, not into a step's own log
capped() {  # capped NAME SECONDS CMD...: run CMD with at most SECONDS (never past the budget)
    local name=$1 cap=$2; shift 2
    local t; t=$(left); ((t < cap)) && cap=$t
    if ((cap < 5)); then
        echo "[gpu_check] $name: skipped (budget spent)" >&3; FAILED+=("$name(skipped)")
        return 124
    fi
    local t0=$SECONDS
    timeout --kill-after=10 "$cap" "$@"
    local rc=$?
    echo "[gpu_check] $name: exit $rc in $((SECONDS - t0)) s (cap $cap s)" >&3
    STATUS+=("$name: exit $rc in $((SECONDS - t0)) s")
    ((rc == 0)) || FAILED+=("$name(exit $rc)")
    return $rc
}

if ((DRY)); then
    export TRITON_INTERPRET=1
    DEVICE=cpu-dry-run
    RES=${RES:-${TMPDIR:-/tmp}/flashvid-gpu-check-dry-run}
    FLAG=--dry-run
    # tiny: a few quick kernel tests (the full suite runs them all under the interpreter)
    TESTS=(tests/kernels/test_kernels.py::test_adts_select_small
           tests/kernels/test_kernels.py::test_token_stats
           tests/kernels/test_order.py::test_permutations_move_the_last_ticket)
    ORDER_TESTS=(tests/kernels/test_kernels.py::test_adts_select_small)
    BENCH=(--shape 2x36x16 --stages compress --backends reference,torch,triton --repeats 3
           --min-time 0)
    REPORT=(--workload llava_onevision --arch 80 --dtype bfloat16 --kernel adts_select
            --jobs 2)
    XDIST=""
else
    unset TRITON_INTERPRET
    DEVICE=$($PY -c "import torch, re; print(re.sub(r'[^a-z0-9]+', '-', \
torch.cuda.get_device_name(0).lower()).strip('-'))") || { echo "no CUDA device"; exit 2; }
    RES=${RES:-benchmarks/results/$DEVICE}
    FLAG=""
    TESTS=(tests/kernels/test_kernels.py tests/kernels/test_order.py
           tests/kernels/test_half_dot.py tests/core/test_backends.py tests/core/test_parity.py)
    ORDER_TESTS=(tests/kernels/test_kernels.py tests/kernels/test_order.py)
    BENCH=(--device cuda --dtype bfloat16 --preset llava_onevision --preset llava_video
           --preset qwen2_5_vl --preset qwen3_vl --repeats 50 --min-time 1000000)
    REPORT=(--arch 90 --jobs 16)
    XDIST=""
    $PY -c "import xdist" 2>/dev/null && XDIST="-n 8"
fi
mkdir -p "$RES"
echo "[gpu_check] $DEVICE -> $RES ($(date -u +%FT%TZ)), budget $BUDGET s"

# (each step's output goes to the terminal and to its log; `capped` records failures)
# 1. environment (device, versions, git revision, this command) -------------------------------
capped env 30 $PY -m benchmarks.gpu_check env --out "$RES" $FLAG

# 2. the kernel tests on this device against the reference -----------------------------------
# (on a GPU, Triton compiles on first launch: 8 processes compile in parallel, cache shared)
capped tests 200 $PY -m pytest -q -ra $XDIST -p no:cacheprovider --junitxml="$RES/pytest.xml" \
    "${TESTS[@]}" > >(tee "$RES/pytest.log") 2>&1

# 3. the same kernels with their program ids remapped on the device ---------------------------
ORDERS=(reversed seed:20260)
((DRY)) && ORDERS=(reversed)  # the loop is the same for every order
for order in "${ORDERS[@]}"; do
    FLASHVID_KERNELS_PROGRAM_ORDER=$order capped "order-$order" 60 $PY -m pytest -q -x $XDIST \
        -p no:cacheprovider "${ORDER_TESTS[@]}" > >(tee "$RES/order-${order/:/-}.log") 2>&1
done

# 4. compress in exact-count mode: one CUDA graph, replayed on new inputs ---------------------
capped graph 60 $PY -m benchmarks.gpu_check graph --out "$RES" $FLAG

# 5. each kernel and compress at the presets --------------------------------------------------
capped timing 90 $PY -m benchmarks.gpu_check timing --out "$RES" $FLAG

# 6. peak memory at 32, 320 and 1024 frames ---------------------------------------------------
capped memory 45 $PY -m benchmarks.gpu_check memory --out "$RES" $FLAG

# 7. the stage benchmark (reference / torch / triton, floors of its own) ----------------------
cap=$(( $(left) > 100 ? $(left) - 70 : $(left) - 5 ))
capped bench "$cap" $PY -m benchmarks "${BENCH[@]}" --out "$RES" > >(tee "$RES/bench.log") 2>&1

# 8. this machine's Triton: registers, spills and the cross-program protocol audit -------------
capped report 65 env -u TRITON_INTERPRET $PY -m flashvid_kernels.report "${REPORT[@]}" \
    > "$RES/report.txt" 2> "$RES/report.log"
tail -n 3 "$RES/report.log"
wait  # the tee of each log

{
    echo "gpu_check on $DEVICE, $(date -u +%FT%TZ), ${SECONDS} s, git $(git rev-parse --short HEAD 2>/dev/null)"
    echo "command: bash benchmarks/gpu_check.sh $FLAG"
    printf '  %s\n' "${STATUS[@]}"
    if ((${#FAILED[@]})); then echo "FAILED: ${FAILED[*]}"; else echo "all steps passed"; fi
    grep -h -E "passed|failed" "$RES"/pytest.log "$RES"/order-*.log 2>/dev/null | tail -n 5
} | tee "$RES/summary.txt"
if [[ -n "${OUT:-}" ]]; then
    tar -czf "$OUT/results.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")"
    cp "$RES"/summary.txt "$RES"/env.json "$RES"/timing.json "$RES"/memory.json \
        "$RES"/graph.json "$RES"/pytest.log "$OUT/" 2>/dev/null
fi
((${#FAILED[@]} == 0))
