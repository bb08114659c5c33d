"""Compile report: every kernel specialisation that ``compress`` launches, compiled for sm_80 and
sm_90 on any machine (no GPU needed), with registers, spills, shared memory and occupancy.

    python -m flashvid_kernels.report            # table
    python -m flashvid_kernels.report --json     # one JSON object per line
    python -m flashvid_kernels.report --arch 90 --dtype bfloat16 --jobs 2

The launches are not listed by hand: each workload (the four presets at retention 0.10, and the
extremes N = 2048, N = 4096, D = 8192) runs the Triton backend's call sequence through the real
launchers on "meta" tensors under ``recording(dry_run=True)``, which records every launch (grid,
arguments, constexprs) instead of running it. Each distinct specialisation is then bound the way
a launch binds it (Triton's own argument specialisation: 16-byte alignment, integers divisible by
16) and compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``.
Registers, stack and static shared memory come from ``cuobjdump -res-usage`` (the copy in the
Triton wheel), spill bytes from the ``ptxas -v`` log, dynamic shared memory from the compiled
metadata.

Each specialisation's PTX and TTIR are then read by ``flashvid_kernels.audit``: for every
kernel with cross-program communication (the frame ticket of ``adts_select``) the report prints
the atomic as emitted (semantics, scope, which threads issue it), the CTA barriers around it,
the loads that read other programs' partials (cache qualifiers), the stores that write them and
how the counter is reset, each with the PTX line that shows it; for every kernel the tl.dot
operand shapes, masked loads without ``other``, float atomics, and whether the frame index is
widened to int64 before any arithmetic. Exit status: 0 when everything compiled, no preset
specialisation spills and every protocol and code check holds; 1 otherwise.

    python -m flashvid_kernels.report --save-asm asm/   # also write each .ptx / .ttir
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import io
import json
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import torch

from ._runtime import Launch, interpreting, recording
from .adts import adts_select
from .audit import audit_ptx, audit_ttir
from .stats import token_stats
from .tstm import tstm_edges

RETENTION, EXPANSION, ALPHA = 0.10, 1.25, 0.7  # the presets' published vision-side budget
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
ARCHS = (80, 90)


@dataclass(frozen=True)
class Workload:
    """One video shape and the selection that compress runs on it (§12 presets)."""

    name: str
    frames: int
    tokens: int
    dim: int
    selection: str  # "adts" (weights and event, no exclusion) or "adts_v1" (weights, exclusion)
    preset: bool  # a published preset: its specialisations must not spill

    @property
    def k(self) -> int:
        """ADTS picks per frame: ceil(ceil(N * r * expansion) * alpha), total clamped to N."""
        total = min(self.tokens, math.ceil(self.tokens * RETENTION * EXPANSION))
        return math.ceil(total * ALPHA)


WORKLOADS = (
    Workload("llava_onevision", 32, 196, 3584, "adts", True),
    Workload("llava_video", 64, 169, 3584, "adts", True),
    Workload("qwen2_5_vl", 16, 1024, 3584, "adts_v1", True),
    Workload("qwen3_vl", 16, 1024, 4096, "adts_v1", True),
    Workload("N2048", 16, 2048, 3584, "adts_v1", False),
    Workload("N4096", 16, 4096, 3584, "adts_v1", False),
    Workload("D8192", 32, 196, 8192, "adts", False),
    # the address-arithmetic extreme: F*N*D = 2**35 elements (the int64 check reads its code)
    Workload("F1024_N4096_D8192", 1024, 4096, 8192, "adts_v1", False),
)

# Per-SM limits for the occupancy: (SMs of the reference part, shared memory per SM, per block)
SM_LIMITS = {80: (108, 167936, 166912), 90: (132, 233472, 232448)}
MAX_WARPS_PER_SM, MAX_CTAS_PER_SM, REGS_PER_SUBPARTITION = 64, 32, 16384
REG_ALLOC_UNIT, SMEM_RESERVED_PER_CTA = 256, 1024


def compress_launches(w: Workload, dtype: torch.dtype) -> list[Launch]:
    """The kernel launches of the Triton backend for one video of workload w (recorded, not run):
    token_stats (the norms, which the input check and every later stage read), token_stats
    again with the event term for "adts" (its segment means need the segmentation, which needs
    the first pass), adts_select, tstm_edges."""
    meta = dict(device="meta")
    x = torch.empty(w.frames, w.tokens, w.dim, dtype=dtype, **meta)
    weights = torch.empty(w.frames, w.tokens, **meta)
    eligible = torch.empty(w.frames, w.tokens, dtype=torch.bool, **meta)
    start = torch.empty(w.frames, dtype=torch.bool, **meta)
    with recording(dry_run=True) as launches:
        norms, _ = token_stats(x)
        if w.selection == "adts":
            norms, event = token_stats(x, torch.empty(w.frames, w.dim, **meta))
            adts_select(x, weights, w.k, False, fill=-1.0, event=event, norms=norms)
        else:
            adts_select(x, weights, w.k, True, fill=-1.0, norms=norms)
        tstm_edges(x, eligible, start, norms=norms)
    return launches


@dataclass
class Spec:
    """One specialisation to compile: a kernel, its arguments' types and constexprs, a target."""

    kernel: str  # module:function
    args: list  # ("tensor", dtype name) or a Python scalar, in order
    meta: dict  # constexprs and launch options
    arch: int
    workloads: list = field(default_factory=list)  # "name/dtype (grid)"
    programs: int = 0  # largest grid among the workloads
    preset: bool = False


def _spec_of(launch: Launch, arch: int) -> Spec:
    fn = getattr(launch.kernel, "fn", launch.kernel)
    args = [("tensor", str(a.dtype).removeprefix("torch.")) if isinstance(a, torch.Tensor) else a
            for a in launch.args]
    return Spec(f"{fn.__module__}:{fn.__name__}", args, launch.meta, arch)


def _mock(a):
    from triton.runtime.jit import MockTensor

    return MockTensor(getattr(torch, a[1])) if isinstance(a, tuple) else a


def _binding(spec: Spec):
    """(kernel, target, options, signature, constexprs, attrs) exactly as a launch binds it."""
    import importlib

    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    module, name = spec.kernel.split(":")
    kernel = getattr(importlib.import_module(module), name)
    target = GPUTarget("cuda", spec.arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    args = [_mock(a) for a in spec.args]
    bound, specialization, options = binder(*args, **spec.meta)
    packed = kernel._pack_args(backend, dict(spec.meta), bound, specialization, options)
    return (kernel, target, *packed)


def _key(spec: Spec) -> str:
    _, target, options, signature, constexprs, attrs = _binding(spec)
    return repr((spec.kernel, spec.arch, sorted(signature.items()), sorted(constexprs.items()),
                 sorted(attrs.items()), sorted(options.__dict__.items())))


def _tool(name: str) -> str:
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def _enable_ptxas_log() -> None:
    """Ask Triton to print the ptxas log (``knobs`` in Triton >= 3.4, the environment before)."""
    try:
        from triton import knobs

        knobs.nvidia.dump_ptxas_log = True
    except (ImportError, AttributeError):
        os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"


def audit(kernel_name: str, signature: dict, asm: dict) -> dict:
    """The protocol (PTX) and code (TTIR) checks of one compiled specialisation."""
    params = [n for n, t in signature.items() if t != "constexpr"]
    pointers = {n for n, t in signature.items() if str(t).startswith("*")}
    return {"protocol": audit_ptx(asm["ptx"], params, pointers),
            "codegen": audit_ttir(asm["ttir"], kernel_name)}


def compile_spec(spec: Spec, save_asm: str | None = None) -> dict:
    """Compile one specialisation; its resource usage and audit (or the error) as a dict."""
    import triton
    from triton.compiler import ASTSource

    t0 = time.perf_counter()
    row = {k: v for k, v in asdict(spec).items() if k != "args"}
    try:
        kernel, target, options, signature, constexprs, attrs = _binding(spec)
        log = io.StringIO()
        _enable_ptxas_log()
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs),
                                      target=target, options=options.__dict__)
        ptxas_log = log.getvalue()
        row.update(audit(spec.kernel.split(":")[1], signature, compiled.asm))
        if save_asm:
            stem = os.path.join(save_asm, _asm_name(spec))
            for ext in ("ptx", "ttir"):
                with open(f"{stem}.{ext}", "w") as f:
                    f.write(compiled.asm[ext])
            row["asm"] = stem
        with tempfile.TemporaryDirectory() as tmp:
            cubin = os.path.join(tmp, "k.cubin")
            with open(cubin, "wb") as f:
                f.write(compiled.asm["cubin"])
            res = subprocess.run([_tool("cuobjdump"), "-res-usage", cubin], check=True,
                                 capture_output=True, text=True).stdout
            if "spill stores" not in ptxas_log:  # compiled earlier (Triton's cache): ask ptxas
                ptxas_log = _ptxas_log(compiled.asm["ptx"], spec.arch, tmp)
    except Exception as e:  # noqa: BLE001 - any compile failure is reported, not raised
        row.update(ok=False, error=f"{type(e).__name__}: {str(e).strip()[:2000]}")
        return row
    usage = {k: int(v) for k, v in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", res)}
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", ptxas_log)
    row.update(
        ok=True, num_warps=compiled.metadata.num_warps, num_stages=compiled.metadata.num_stages,
        regs=usage["REG"], stack=usage["STACK"], local=usage.get("LOCAL", 0),
        spill_stores=int(spills[1]) if spills else None,
        spill_loads=int(spills[2]) if spills else None,
        shared=compiled.metadata.shared + usage.get("SHARED", 0),
        compile_s=round(time.perf_counter() - t0, 2))
    row.update(occupancy(spec.arch, row["regs"], row["num_warps"], row["shared"]))
    sms = SM_LIMITS[spec.arch][0]
    row["sms_busy"] = min(spec.programs, sms)
    row["waves"] = round(spec.programs / max(1, sms * row["ctas_per_sm"]), 2)
    return row


def _asm_name(spec: Spec) -> str:
    name = spec.kernel.split(":")[1].strip("_").removesuffix("_kernel")
    dtype = spec.workloads[0].split("/")[1] if spec.workloads else "any"
    consts = "-".join(f"{k}{int(v) if isinstance(v, bool) else v}" for k, v in spec.meta.items()
                      if k not in ("num_warps", "num_stages", "REMAP", "EMULATE_TC"))
    return f"{name}.sm{spec.arch}.{dtype}.{consts}"


def _ptxas_log(ptx: str, arch: int, tmp: str) -> str:
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    src = os.path.join(tmp, "k.ptx")
    with open(src, "w") as f:
        f.write(ptx)
    cmd = [get_ptxas(arch).path, "-v", "--regAllocOptLevel=2", "-lineinfo",
           f"--gpu-name={sm_arch_from_capability(arch)}", src, "-o", os.path.join(tmp, "k.o")]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stderr


def occupancy(arch: int, regs: int, warps: int, shared: int) -> dict:
    """Resident programs per SM and the fraction of the SM's 64 warp slots they fill."""
    _, smem_sm, smem_block = SM_LIMITS[arch]
    regs_per_warp = math.ceil(regs * 32 / REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    warps_by_regs = 4 * (REGS_PER_SUBPARTITION // regs_per_warp) if regs else MAX_WARPS_PER_SM
    limits = {
        "regs": warps_by_regs // warps,
        "warps": MAX_WARPS_PER_SM // warps,
        "ctas": MAX_CTAS_PER_SM,
        "shared": (smem_sm // (shared + SMEM_RESERVED_PER_CTA)) if shared <= smem_block else 0,
    }
    ctas = min(limits.values())
    return {"ctas_per_sm": ctas, "occupancy": round(ctas * warps / MAX_WARPS_PER_SM, 3),
            "limited_by": min(limits, key=limits.get)}


def collect(workloads, dtypes, archs) -> list[Spec]:
    """The distinct specialisations of the given workloads, in first-seen order."""
    specs: dict[str, Spec] = {}
    for w in workloads:
        for dname in dtypes:
            for launch in compress_launches(w, DTYPES[dname]):
                programs = math.prod(launch.grid)
                for arch in archs:
                    spec = _spec_of(launch, arch)
                    spec = specs.setdefault(_key(spec), spec)
                    tag = f"{w.name}/{dname}"
                    if tag not in spec.workloads:
                        spec.workloads.append(tag)
                    spec.programs = max(spec.programs, programs)
                    spec.preset = spec.preset or w.preset
    return list(specs.values())


KERNELS = ("token_stats", "adts_select", "tstm_edges")


def _kernel_short(kernel: str) -> str:
    return kernel.split(":")[1].strip("_").removesuffix("_kernel")


def _short(meta: dict) -> str:
    keep = {k: v for k, v in meta.items()
            if k not in ("num_warps", "num_stages", "REMAP", "EMULATE_TC")}
    return " ".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in keep.items())


def print_table(rows: list[dict], out=sys.stdout) -> None:
    head = (f"{'kernel':<22} {'arch':<5} {'dtype':<8} {'constexprs':<62} {'warps':>5} "
            f"{'regs':>4} {'stack':>5} {'spill':>5} {'smem':>6} {'cta/sm':>6} {'occ':>5} "
            f"{'progs':>6} {'sms':>4}  workloads")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        name = r["kernel"].split(":")[1].strip("_").removesuffix("_kernel")
        dtype = r["workloads"][0].split("/")[1]
        if not r["ok"]:
            print(f"{name:<22} sm_{r['arch']:<2} {dtype:<8} FAILED: {r['error'][:200]}", file=out)
            continue
        spill = (r["spill_stores"] or 0) + (r["spill_loads"] or 0)
        names = sorted({w.split("/")[0] for w in r["workloads"]})
        print(f"{name:<22} sm_{r['arch']:<2} {dtype:<8} {_short(r['meta']):<62} "
              f"{r['num_warps']:>5} {r['regs']:>4} {r['stack']:>5} {spill:>5} {r['shared']:>6} "
              f"{r['ctas_per_sm']:>6} {r['occupancy']:>5.2f} {r['programs']:>6} "
              f"{r['sms_busy']:>4}  {','.join(names)}", file=out)


def _failed_checks(r: dict) -> list[str]:
    return [f"{part}.{name}" for part in ("protocol", "codegen")
            for name, c in r.get(part, {}).get("checks", {}).items() if not c["ok"]]


def print_protocol(rows: list[dict], out=sys.stdout) -> None:
    """The cross-program protocol of each specialisation that has one, with the PTX lines that
    carry it, and a one-line code audit of every other one."""
    print("\n== cross-program protocol, read from the PTX of each specialisation ==", file=out)
    for r in rows:
        if not r["ok"]:
            continue
        name = r["kernel"].split(":")[1].strip("_").removesuffix("_kernel")
        dtype = r["workloads"][0].split("/")[1]
        p, c = r["protocol"], r["codegen"]
        failed = _failed_checks(r)
        head = (f"{name} sm_{r['arch']} {dtype} {_short(r['meta'])}: "
                f"{'OK' if not failed else 'FAILED ' + ', '.join(failed)}")
        if not p["cross_program"] and not failed:
            print(f"{head}; no cross-program communication; {c['checks']['dot_sizes']['detail']}"
                  f"; {c['checks']['int64_frame_offsets']['detail']}", file=out)
            continue
        print(head, file=out)
        print(f"  counters {p['counters']}, scratch {p['scratch']}", file=out)
        for a in p["atomics"]:
            print(f"  {'ticket':<23} {a['ptx']}", file=out)
        for check in ("sem_scope", "single_thread", "barrier_before", "barrier_after",
                      "scratch_writes", "scratch_reads", "reset", "float_atomics"):
            if check in p["checks"]:
                v = p["checks"][check]
                print(f"  {check:<23} {'ok  ' if v['ok'] else 'FAIL'} {v['detail']}", file=out)
        for check, v in c["checks"].items():
            print(f"  {check + ' (ttir)':<23} {'ok  ' if v['ok'] else 'FAIL'} {v['detail']}",
                  file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flashvid_kernels.report",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), choices=ARCHS)
    parser.add_argument("--dtype", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--workload", nargs="+", default=[w.name for w in WORKLOADS],
                        choices=[w.name for w in WORKLOADS])
    parser.add_argument("--kernel", nargs="+", default=None, choices=KERNELS,
                        help="only these kernels (default: all)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compiler processes (default: one per CPU)")
    parser.add_argument("--save-asm", metavar="DIR", default=None,
                        help="write each specialisation's PTX and TTIR to DIR")
    args = parser.parse_args(argv)
    if interpreting():  # the kernels were built as interpreter functions: start again without
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        cmd = [sys.executable, "-m", "flashvid_kernels.report",
               *(sys.argv[1:] if argv is None else argv)]
        return subprocess.run(cmd, env=env).returncode
    t0 = time.perf_counter()
    workloads = [w for w in WORKLOADS if w.name in args.workload]
    specs = collect(workloads, args.dtype, args.arch)
    if args.kernel:
        specs = [s for s in specs if _kernel_short(s.kernel) in args.kernel]
    if args.save_asm:
        os.makedirs(args.save_asm, exist_ok=True)
    compile_one = functools.partial(compile_spec, save_asm=args.save_asm)
    if args.jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            rows = list(pool.map(compile_one, specs))
    else:
        rows = [compile_one(s) for s in specs]
    rows.sort(key=lambda r: (r["kernel"], r["workloads"][0].split("/")[1], r["arch"]))
    if args.json:
        for r in rows:
            print(json.dumps(r, default=str))
    else:
        print_table(rows)
        print_protocol(rows)
    failed = [r for r in rows if not r["ok"]]
    spilling = [r for r in rows if r["ok"] and r["preset"]
                and (r["stack"] or r["spill_stores"] or r["spill_loads"])]
    unsound = [r for r in rows if r["ok"] and _failed_checks(r)]
    cross = sum(1 for r in rows if r["ok"] and r["protocol"]["cross_program"])
    import triton

    print(f"# {len(rows)} specialisations ({len(failed)} failed to compile, {len(spilling)} preset "
          f"ones spill, {len(unsound)} fail a protocol or code check; {cross} with cross-program "
          f"communication audited) in {time.perf_counter() - t0:.0f} s; triton "
          f"{triton.__version__}, torch {torch.__version__}", file=sys.stderr)
    for r in unsound:
        print(f"# FAILED {r['kernel']} sm_{r['arch']} {r['workloads'][0]}: "
              f"{', '.join(_failed_checks(r))}", file=sys.stderr)
    return 1 if failed or spilling or unsound else 0


if __name__ == "__main__":
    sys.exit(main())
