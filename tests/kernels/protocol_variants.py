"""A tiny kernel with the ADTS ticket protocol, and variants that break one property each, for
the audit's own tests (tests/kernels/test_kernel_report.py): every program writes a partial,
takes a ticket, and the program that draws the last ticket resets the counter and sums every
program's partial. Compiled for sm_90 by ``flashvid_kernels.report.compile_spec``."""

import triton
import triton.language as tl


@triton.jit
def ticket_kernel(part_ptr, ticket_ptr, out_ptr,
                  BARRIER: tl.constexpr, SEM: tl.constexpr, SCOPE: tl.constexpr,
                  CG: tl.constexpr, RESET: tl.constexpr, GUARD: tl.constexpr,
                  FLOAT: tl.constexpr, B: tl.constexpr):
    i = tl.program_id(0)
    n = tl.num_programs(0)
    o = tl.arange(0, B)
    tl.store(part_ptr + i * B + o, o.to(tl.float32) + i)
    if BARRIER:
        tl.debug_barrier()
    t = tl.atomic_add(ticket_ptr, 1, sem=SEM, scope=SCOPE)
    if FLOAT:
        tl.atomic_add(out_ptr + B, 1.0)
    if (t == n - 1) or (not GUARD):
        if RESET:
            tl.store(ticket_ptr, 0)
        acc = tl.zeros((B,), dtype=tl.float32)
        for j in range(0, n):
            if CG:
                acc += tl.load(part_ptr + j * B + o, cache_modifier=".cg")
            else:
                acc += tl.load(part_ptr + j * B + o)
        tl.store(out_ptr + o, acc)


GOOD = dict(BARRIER=True, SEM="acq_rel", SCOPE="gpu", CG=True, RESET=True, GUARD=True,
            FLOAT=False, B=128, num_warps=4)
# variant -> (constexprs changed, the protocol check that must fail)
BROKEN = {
    "relaxed ticket": ({"SEM": "relaxed"}, "sem_scope"),
    "release only": ({"SEM": "release"}, "sem_scope"),
    "acquire only": ({"SEM": "acquire"}, "sem_scope"),
    "CTA scope": ({"SCOPE": "cta"}, "sem_scope"),
    "partials through L1": ({"CG": False}, "scratch_reads"),
    "counter never reset": ({"RESET": False}, "reset"),
    "reset by every program": ({"GUARD": False}, "reset"),
    "float atomic": ({"FLOAT": True}, "float_atomics"),
}
