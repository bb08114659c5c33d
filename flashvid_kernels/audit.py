"""Static checks of the compiled kernels, read from the PTX and the Triton IR (TTIR) that
``flashvid_kernels.report`` compiles for every specialisation (no GPU needed).

``audit_ptx`` finds the cross-program communication of a kernel: the pointer parameters that
are both written and read by plain memory operations (the scratch) and the ones updated by
atomics (the counters). For each counter atomic (the frame ticket of ``adts_select``) it checks
the properties that make the protocol correct under the PTX memory model:

* ``sem_scope``: the atomic releases the program's earlier writes and acquires the other
  programs' (``.acq_rel``, or ``.release``/``.acquire`` with fences), at GPU or system scope;
* ``single_thread``: one thread of the program issues it (a predicate on the thread id);
* ``barrier_before``: a CTA barrier (``bar.sync``) lies between the program's last scratch
  store and the atomic, so every thread's stores precede the release in causality order;
* ``barrier_after``: a CTA barrier lies between the atomic and the first scratch load, so every
  thread's loads follow the acquire;
* ``scratch_reads``: the scratch is read only after the atomic, never through the
  non-coherent path (``.nc``), and bypassing L1 (``.cg``, ``.cv``, volatile or strong loads);
* ``scratch_writes``: plain generic-proxy stores (``st.global``; no TMA / async proxy), all
  before the atomic;
* ``reset``: the counter is written back only after the atomic, with the constant 0, in code
  entered only through a branch on the atomic's result (the program that drew the last ticket);
* ``float_atomics``: none (their order would change results).

``audit_ttir`` checks what is easier to see before lowering: every ``tt.dot`` operand at least
16 in each dimension, every masked ``tt.load`` given an ``other`` value, no floating-point
atomic, and the frame index (a program id, or the chunk start ``f0``) widened to int64 before
any integer arithmetic, so that offsets like frame * N * D cannot wrap at 2**31.

Both take the text and return plain dicts: ``{"ok": bool, "checks": {name: {"ok", "detail"}},
...}``; they use no Triton internals and read the output of Triton 3.6 and 3.9 alike.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

MIN_DOT = 16

# The frame index of each kernel: (program-id axis, integer parameters added to it)
FRAME_INDEX = {
    "_adts_select_kernel": ("y", ("f0",)),
    "_token_stats_kernel": ("x", ()),
    "_tstm_edges_kernel": ("x", ()),
}

_SEMS = ("relaxed", "acquire", "release", "acq_rel")
_SCOPES = ("cta", "cluster", "gpu", "sys")
_FLOAT_TYPES = ("f16", "bf16", "f32", "f64", "f16x2", "bf16x2")
_NO_DEST = ("st.", "red.", "bar", "barrier", "bra", "ret", "exit", "fence", "membar", "prefetch",
            "wgmma.fence", "wgmma.commit", "wgmma.wait", "cp.async", "mbarrier", "trap")
_REG = re.compile(r"%[A-Za-z_]\w*(?:\.[xyz]\b)?")


# ------------------------------------------------------------------------------------- PTX
@dataclass
class Instr:
    index: int  # position in the instruction stream
    line: int  # 1-based line of the PTX text
    pred: str | None  # "%p3" or "!%p3"
    op: str
    operands: list[str]
    text: str
    dests: set[str] = field(default_factory=set)
    srcs: set[str] = field(default_factory=set)

    @property
    def address(self) -> str | None:
        for o in self.operands:
            if o.startswith("["):
                return o
        return None


def _split_operands(text: str) -> list[str]:
    out, depth, cur = [], 0, []
    for ch in text:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def parse_ptx(ptx: str) -> tuple[list[Instr], dict[str, int]]:
    """The instructions of a PTX module in text order, and the position of each label."""
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    for lineno, raw in enumerate(ptx.splitlines(), 1):
        line = raw.split("//", 1)[0].strip()
        if not line or line.startswith(".") or line in ("{", "}", ")", "("):
            continue
        m = re.match(r"^(\$?[\w$]+):$", line)
        if m:
            labels[m[1]] = len(instrs)
            continue
        m = re.match(r"^(?:@(!?%\w+)\s+)?([a-z][\w.:]*)\s*(.*?);$", line)
        if not m:
            continue
        pred, op, rest = m[1], m[2], m[3]
        operands = _split_operands(rest)
        ins = Instr(len(instrs), lineno, pred, op, operands, " ".join(line.split()))
        regs = [_REG.findall(o) for o in operands]
        if operands and not op.startswith(_NO_DEST):
            ins.dests = {r for r in regs[0] if "|" not in r}
            ins.dests |= {r.strip() for r in operands[0].split("|") if r.strip().startswith("%")}
            ins.srcs = {r for rs in regs[1:] for r in rs}
        else:
            ins.srcs = {r for rs in regs for r in rs}
        instrs.append(ins)
    return instrs, labels


class PtxProgram:
    """Def/use information of one PTX kernel."""

    def __init__(self, ptx: str, params: list[str]) -> None:
        self.instrs, self.labels = parse_ptx(ptx)
        self.params = params
        self.defs: dict[str, list[Instr]] = defaultdict(list)
        for ins in self.instrs:
            for r in ins.dests:
                self.defs[r].append(ins)
        self._bases: dict[str, frozenset] = {}
        m = re.search(r"\.(?:reqntid|maxntid)\s+(\d+)", ptx)
        self._threads = int(m[1]) if m else None

    def param_of(self, ins: Instr) -> str | None:
        """The kernel parameter an ld.param instruction reads."""
        m = re.search(r"_param_(\d+)", ins.address or "")
        if not m:
            return None
        i = int(m[1])
        return self.params[i] if i < len(self.params) else f"<param {i}>"

    def bases(self, reg: str) -> frozenset:
        """The kernel parameters a register is computed from by arithmetic (not through values
        loaded from memory): for an address, the buffers it points into."""
        if reg in self._bases:
            return self._bases[reg]
        seen, stack, found = {reg}, [reg], set()
        while stack:
            r = stack.pop()
            for ins in self.defs.get(r, ()):
                if ins.op.startswith("ld.param"):
                    p = self.param_of(ins)
                    if p:
                        found.add(p)
                    continue
                if ins.op.startswith(("ld.", "atom.", "shfl", "ldmatrix")):
                    continue  # a value read from memory or another thread: data, not address
                for s in ins.srcs:
                    if s not in seen:
                        seen.add(s)
                        stack.append(s)
        self._bases[reg] = frozenset(found)
        return self._bases[reg]

    def address_bases(self, ins: Instr) -> frozenset:
        addr = ins.address or ""
        if ins.op.startswith(("cp.async", "cp.reduce.async")) and len(ins.operands) > 1:
            # cp.async.<dst space>.<src space> [dst], [src], ...: the global side's address
            addr = ins.operands[0] if _copy_direction(ins.op) == "store" else ins.operands[1]
        out: set = set()
        for r in _REG.findall(addr):
            out |= self.bases(r)
        return frozenset(out)

    def threads(self) -> int | None:
        """Threads per program, from ``.reqntid`` / ``.maxntid`` in the PTX."""
        return self._threads

    def evaluate(self, reg: str, tid: int, _depth: int = 0) -> int | None:
        """The value of ``reg`` in thread ``tid`` when it depends only on %tid.x and constants
        through simple integer and predicate operations; None otherwise."""
        if reg == "%tid.x":
            return tid
        if reg in ("%tid.y", "%tid.z"):
            return 0
        defs = self.defs.get(reg, [])
        if len(defs) != 1 or _depth > 32:
            return None
        d = defs[0]
        if d.pred is not None:
            return None
        vals = []
        for o in d.operands[1:]:
            if o.startswith("%"):
                v = self.evaluate(o, tid, _depth + 1)
            else:
                try:
                    v = int(o, 0)
                except ValueError:
                    return None
            if v is None:
                return None
            vals.append(v)
        q = _qualifiers(d.op)
        name = d.op.split(".")[0]
        binary = {"and": lambda a, b: a & b, "or": lambda a, b: a | b,
                  "xor": lambda a, b: a ^ b, "add": lambda a, b: a + b,
                  "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
                  "shl": lambda a, b: a << b, "shr": lambda a, b: a >> b}
        if name in ("mov", "cvt") and len(vals) == 1:
            return vals[0]
        if name in binary and len(vals) == 2:
            return binary[name](vals[0], vals[1]) & 0xFFFFFFFF
        if name == "not" and len(vals) == 1:
            return int(not vals[0]) if "pred" in q else (~vals[0]) & 0xFFFFFFFF
        if name == "setp" and len(vals) == 2:
            cmp = {"eq": vals[0] == vals[1], "ne": vals[0] != vals[1], "lt": vals[0] < vals[1],
                   "le": vals[0] <= vals[1], "gt": vals[0] > vals[1], "ge": vals[0] >= vals[1]}
            c = next((k for k in q if k in cmp), None)
            return int(cmp[c]) if c else None
        if name == "selp" and len(vals) == 3:
            return vals[0] if vals[2] else vals[1]
        return None

    def constant(self, reg: str) -> int | None:
        """The integer every definition of ``reg`` moves into it, if they all move one."""
        values = set()
        for ins in self.defs.get(reg, ()):
            if not ins.op.startswith("mov") or len(ins.operands) != 2:
                return None
            try:
                values.add(int(ins.operands[1], 0))
            except ValueError:
                return None
        return values.pop() if len(values) == 1 else None

    def shared_cell(self, addr: str) -> tuple[str, int] | None:
        """(symbol, byte offset) of a shared-memory address operand, when it resolves."""
        m = re.match(r"^\[\s*([%\w.]+)\s*(?:\+\s*(-?\d+))?\s*\]$", addr or "")
        if not m:
            return None
        base, off = m[1], int(m[2] or 0)
        for _ in range(16):
            if not base.startswith("%"):
                return base, off
            defs = self.defs.get(base, [])
            if len(defs) != 1:
                return None
            d = defs[0]
            if d.op.startswith(("mov", "cvta")) and len(d.operands) == 2:
                base = d.operands[1]
            elif d.op.startswith("add") and len(d.operands) == 3:
                try:
                    off += int(d.operands[2], 0)
                except ValueError:
                    return None
                base = d.operands[1]
            else:
                return None
        return None

    def taint_from(self, start: Instr) -> set[str]:
        """Registers computed from ``start``'s result, through registers and shared memory."""
        tainted = set(start.dests)
        cells: set = set()
        fallback_after: list[int] = []
        for ins in self.instrs[start.index + 1:]:
            if ins.op.startswith("st.shared") and ins.srcs & tainted:
                cell = self.shared_cell(ins.address)
                if cell is None:
                    fallback_after.append(ins.index)
                else:
                    cells.add(cell)
                continue
            if ins.op.startswith("ld.shared"):
                cell = self.shared_cell(ins.address)
                if (cell is not None and cell in cells) or (cell is None and fallback_after):
                    tainted |= ins.dests
                continue
            if ins.srcs & tainted:
                tainted |= ins.dests
        return tainted


def _qualifiers(op: str) -> list[str]:
    return op.split(".")[1:]


def _copy_direction(op: str) -> str | None:
    """"store" for an asynchronous copy to global memory, "load" for one from it."""
    spaces = [q for q in _qualifiers(op) if q == "global" or q.startswith("shared")]
    if len(spaces) < 2:
        return None
    return "store" if spaces[0] == "global" else "load" if spaces[1] == "global" else None


def _atomic_info(op: str) -> dict:
    q = _qualifiers(op)
    sem = next((s for s in q if s in _SEMS), None)
    scope = next((s for s in q if s in _SCOPES), None)
    return {"sem": sem or "relaxed", "sem_explicit": sem is not None,
            "scope": scope or "gpu", "scope_explicit": scope is not None,
            "float": any(t in _FLOAT_TYPES for t in q[1:]),
            "op": next((s for s in q if s in ("add", "inc", "exch", "cas", "min", "max", "and",
                                              "or", "xor", "dec")), "?")}


def _fence_kind(ins: Instr) -> str | None:
    """"release"/"acquire"-capable fence at GPU or system scope, as "both", else None."""
    q = _qualifiers(ins.op)
    if ins.op.startswith("fence") and ("sc" in q or "acq_rel" in q) and (
            "gpu" in q or "sys" in q):
        return "both"
    if ins.op.startswith("membar") and ("gl" in q or "sys" in q):
        return "both"
    return None


def _is_barrier(ins: Instr) -> bool:
    return ins.op.startswith(("bar.sync", "barrier.sync", "bar.cta.sync", "barrier.cta.sync")) \
        or ins.op in ("bar", "barrier")


def _l1_bypass(op: str) -> bool:
    q = _qualifiers(op)
    if op.startswith("cp.async"):
        return "cg" in q
    strong = any(s in q for s in ("relaxed", "acquire")) and any(s in q for s in ("gpu", "sys"))
    return "cg" in q or "cv" in q or "volatile" in q or strong


def _check(ok: bool, detail: str) -> dict:
    return {"ok": bool(ok), "detail": detail}


def _show(ins: Instr) -> str:
    return f"{ins.text} (ptx:{ins.line})"


def _single_thread(prog: PtxProgram, t: Instr) -> dict:
    """Exactly one thread of the program issues ``t``: its predicate, evaluated for every
    thread id, holds once."""
    n = prog.threads()
    if t.pred is None:
        return _check(False, "not predicated: every thread of the program takes a ticket")
    if not n:
        return _check(False, f"predicated by {t.pred}, but the thread count is not in the PTX")
    reg, neg = t.pred.lstrip("!"), t.pred.startswith("!")
    values = [prog.evaluate(reg, tid) for tid in range(n)]
    if any(v is None for v in values):
        return _check(False, f"predicate {t.pred} is not a function of the thread id alone")
    on = [tid for tid, v in enumerate(values) if bool(v) != neg]
    return _check(len(on) == 1, f"predicate {t.pred} holds for thread(s) {on[:4]} of {n}"
                  + ("" if len(on) == 1 else ": not exactly one thread"))


def audit_ptx(ptx: str, params: list[str], pointers: set[str] | None = None) -> dict:
    """The cross-program protocol of one kernel's PTX (``params``: its parameter names in PTX
    order; ``pointers``: those that are pointers, by default every one). See the module
    docstring for the checks."""
    prog = PtxProgram(ptx, params)
    ptrs = set(params) if pointers is None else set(pointers)
    loads, stores, atomics = [], [], []
    for ins in prog.instrs:
        if ins.op.startswith(("atom.", "red.")):
            atomics.append(ins)
        elif ins.op.startswith(("cp.async", "cp.reduce.async")):
            direction = _copy_direction(ins.op)
            if direction == "store":
                stores.append(ins)
            elif direction == "load":
                loads.append(ins)
        elif ins.op.startswith("st.") and not ins.op.startswith(("st.shared", "st.local",
                                                                 "st.param")):
            stores.append(ins)  # st.global, and generic st (which may address global memory)
        elif ins.op.startswith("ld.global") or (
                ins.op.startswith("ld.") and not ins.op.startswith(("ld.shared", "ld.local",
                                                                    "ld.param", "ld.const"))):
            loads.append(ins)
    base = {id(i): prog.address_bases(i) & ptrs for i in loads + stores + atomics}
    counters = set().union(*(base[id(a)] for a in atomics)) if atomics else set()
    written = set().union(*(base[id(s)] for s in stores)) if stores else set()
    read = set().union(*(base[id(ld)] for ld in loads)) if loads else set()
    scratch = (written & read) - counters
    float_atoms = [a for a in atomics if _atomic_info(a.op)["float"]]
    out: dict = {"cross_program": bool(counters or scratch), "counters": sorted(counters),
                 "scratch": sorted(scratch), "atomics": [], "checks": {}}
    checks = out["checks"]
    checks["float_atomics"] = _check(
        not float_atoms, "none" if not float_atoms else "; ".join(_show(a) for a in float_atoms))
    if not out["cross_program"]:
        checks["no_shared_buffers"] = _check(True, "no atomics; no buffer is both written and "
                                                   "read by the kernel's programs")
        out["ok"] = all(c["ok"] for c in checks.values())
        return out
    if not atomics:
        checks["ordering"] = _check(False, f"buffers {sorted(scratch)} are written and read by "
                                           "the programs of one launch with no atomic to order "
                                           "the accesses")
        out["ok"] = False
        return out

    def on(ins, params):
        return bool(base[id(ins)] & params)

    s_stores = [s for s in stores if on(s, scratch)]
    s_loads = [ld for ld in loads if on(ld, scratch)]
    c_stores = [s for s in stores if on(s, counters)]
    for t in atomics:
        info = _atomic_info(t.op)
        row = {"ptx": _show(t), **info, "buffer": sorted(base[id(t)])}
        before = [s for s in s_stores if s.index < t.index]
        after_loads = [ld for ld in s_loads if ld.index > t.index]
        first_read = min((ld.index for ld in after_loads), default=len(prog.instrs))
        last_write = max((s.index for s in before), default=-1)
        fences_before = [i for i in prog.instrs[last_write + 1:t.index] if _fence_kind(i)]
        fences_after = [i for i in prog.instrs[t.index + 1:first_read] if _fence_kind(i)]
        release = info["sem"] in ("release", "acq_rel") or bool(fences_before)
        acquire = info["sem"] in ("acquire", "acq_rel") or bool(fences_after)
        scope_ok = info["scope"] in ("gpu", "sys")
        checks["sem_scope"] = _check(
            release and acquire and scope_ok,
            f"{t.op}: sem {info['sem']}{'' if info['sem_explicit'] else ' (PTX default)'}, "
            f"scope {info['scope']}{'' if info['scope_explicit'] else ' (PTX default)'}"
            + (f"; fences before: {[_show(f) for f in fences_before]}" if fences_before else "")
            + (f"; fences after: {[_show(f) for f in fences_after]}" if fences_after else "")
            + ("" if release else "; NOT a release: other programs may miss this one's stores")
            + ("" if acquire else "; NOT an acquire: the last program may read stale partials")
            + ("" if scope_ok else "; scope narrower than the GPU: other CTAs are not ordered"))
        checks["single_thread"] = _single_thread(prog, t)
        bars = [i for i in prog.instrs[last_write + 1:t.index] if _is_barrier(i)]
        checks["barrier_before"] = _check(
            bool(before) and bool(bars),
            (f"{_show(bars[-1])} after the last scratch store {_show(prog.instrs[last_write])}"
             if bars and before else "no CTA barrier between the last scratch store and the "
                                     "atomic" if before else "no scratch store before the "
                                                             "atomic"))
        bars_after = [i for i in prog.instrs[t.index + 1:first_read] if _is_barrier(i)]
        checks["barrier_after"] = _check(
            bool(bars_after) and bool(after_loads),
            f"{_show(bars_after[0])} between the atomic and the first scratch load"
            if bars_after and after_loads else
            "no scratch load after the atomic" if not after_loads else
            "no CTA barrier between the atomic (one thread's acquire) and the scratch loads")
        early = [ld for ld in s_loads if ld.index < t.index]
        nc = [ld for ld in after_loads if "nc" in _qualifiers(ld.op)
              or ld.op.startswith("cp.async.bulk")]  # non-coherent, or the async proxy
        cached = [ld for ld in after_loads if not _l1_bypass(ld.op)]
        kinds = sorted({ld.op for ld in after_loads})
        checks["scratch_reads"] = _check(
            not early and not nc and not cached and bool(after_loads),
            f"{len(after_loads)} loads after the atomic ({', '.join(kinds)}), "
            f"e.g. {_show(after_loads[0]) if after_loads else '-'}; {len(early)} before it"
            + (f"; non-coherent or async proxy: {_show(nc[0])}" if nc else "")
            + (f"; through L1: {_show(cached[0])}" if cached else ""))
        late = [s for s in s_stores if s.index > t.index]
        proxy = [s for s in s_stores if not s.op.startswith("st.")]
        checks["scratch_writes"] = _check(
            not late and not proxy and bool(before),
            f"{len(before)} stores before the atomic ({', '.join(sorted({s.op for s in before}))})"
            f"; {len(late)} after it" + (f"; async proxy: {_show(proxy[0])}" if proxy else ""))
        tainted = prog.taint_from(t)
        resets = [s for s in c_stores if s.index > t.index]
        early_c = [s for s in c_stores if s.index < t.index]
        details, ok = [], bool(resets) and not early_c
        for s in resets:
            value = s.operands[-1].strip("{} ") if s.operands else ""
            regs = _REG.findall(value)
            zero = (all(prog.constant(v) == 0 for v in regs) if regs
                    else re.fullmatch(r"0x0*|0+", value) is not None)
            guards = []
            for b in prog.instrs[t.index + 1:s.index]:
                target = b.operands[-1] if b.operands else ""
                if (b.op.startswith("bra") and b.pred and b.pred.lstrip("!") in tainted
                        and prog.labels.get(target, -1) > s.index):
                    guards.append(b)
            ok = ok and zero and bool(guards)
            details.append(f"{_show(s)}: value {'0' if zero else 'not the constant 0'}, "
                           + (f"skipped by {_show(guards[0])} (a test of the atomic's result)"
                              if guards else "NOT guarded by a test of the atomic's result"))
        if early_c:
            details.append(f"counter written before the atomic: {_show(early_c[0])}")
        checks["reset"] = _check(ok, "; ".join(details) or "the counter is never reset")
        out["atomics"].append(row)
    out["ok"] = all(c["ok"] for c in checks.values())
    return out


# ------------------------------------------------------------------------------------ TTIR
_TT_RESULT = re.compile(r"^\s*(%[\w]+)(?::\d+)?\s*=\s*\"?([\w.]+)\"?\s*(.*)$")
_TT_VALUE = re.compile(r"%[\w]+(?:#\d+)?")


def _tt_operands(rest: str) -> list[str]:
    body = rest.split(" loc(", 1)[0]
    body = re.split(r"\s:\s|\{", body, maxsplit=1)[0]
    return [v.split("#")[0] for v in _TT_VALUE.findall(body)]


def _tt_types(rest: str) -> str:
    body = rest.split(" loc(", 1)[0]
    return body.rsplit(" : ", 1)[1] if " : " in body else ""


def _is_i32(type_text: str) -> bool:
    t = type_text.strip()
    return t == "i32" or t.endswith("xi32>")


def audit_ttir(ttir: str, kernel: str) -> dict:
    """tl.dot sizes, masked loads, float atomics and int64 frame offsets of one kernel's TTIR
    (``kernel``: its function name, for ``FRAME_INDEX``)."""
    lines = ttir.splitlines()
    dots, loads_without_other, masked, float_atoms = [], [], 0, []
    results: dict[str, tuple[str, list[str], str, str]] = {}  # name -> (op, operands, types, text)
    users: dict[str, list[str]] = defaultdict(list)
    axis, frame_args = FRAME_INDEX.get(kernel, (None, ()))
    seeds: set[str] = {f"%{a}" for a in frame_args}
    region_stack: list[str | None] = []
    for raw in lines:
        line = raw.strip()
        if "tt.dot " in line:
            shapes = re.findall(r"tensor<((?:\d+x)+)[a-z]", line)
            dims = [[int(d) for d in s.rstrip("x").split("x")] for s in shapes[:2]]
            dots.append({"shapes": dims, "min": min((d for s in dims for d in s), default=0)})
        if re.search(r"\btt\.load\b", line):
            ops = _tt_operands(line.split("tt.load", 1)[1])
            if len(ops) == 2:
                loads_without_other.append(line.split(" loc(", 1)[0])
            masked += len(ops) >= 2
        m = re.search(r"tt\.atomic_rmw\s+(\w+)", line)
        if m and (m[1].startswith("f") or re.search(r"f(16|32|64)", _tt_types(m.string))):
            float_atoms.append(line.split(" loc(", 1)[0])
        m = _TT_RESULT.match(line)
        parent = region_stack[-1] if region_stack else None
        if m:
            name, op, rest = m[1], m[2], m[3]
            operands = _tt_operands(rest)
            # region bindings (scf.for iter_args / scf.while inits): %arg = %init
            for arg, init in re.findall(r"(%[\w]+)\s*=\s*(%[\w]+(?:#\d+)?)",
                                        rest.split(" loc(", 1)[0]):
                users[init.split("#")[0]].append(arg)
            results[name] = (op, operands, _tt_types(rest), line.split(" loc(", 1)[0])
            for o in operands:
                users[o].append(name)
            if op == "tt.get_program_id" and re.match(rf"\s*{axis}\b", rest or ""):
                seeds.add(name)
            if line.endswith("{"):
                region_stack.append(name)
        elif line.startswith(("scf.yield", "scf.condition")) and parent:
            for o in _tt_operands(line.split(" ", 1)[1] if " " in line else ""):
                users[o].append(parent)
        elif line.startswith("^bb") and parent:
            for arg in re.findall(r"(%[\w]+):", line):
                users[parent].append(arg)
        elif line.endswith("{") and not m:
            region_stack.append(parent)
        if line.startswith("}") and region_stack:
            region_stack.pop()
            if line.endswith("{"):  # "} do {"
                region_stack.append(parent)
    tainted, stack = set(seeds), list(seeds)
    while stack:
        v = stack.pop()
        for u in users.get(v, ()):
            op = results.get(u, ("",))[0]
            if u not in tainted and not op.startswith("tt.load"):
                tainted.add(u)
                stack.append(u)
    arith = ("arith.addi", "arith.subi", "arith.muli", "arith.divsi", "arith.divui",
             "arith.remsi", "arith.remui", "arith.shli")
    narrow, widened = [], 0
    for name in tainted:
        op, operands, types, text = results.get(name, ("", [], "", ""))
        if op in arith and _is_i32(types):
            narrow.append(text)
        elif op == "tt.addptr" and len(operands) > 1 and operands[1] in tainted:
            off_type = types.rsplit(",", 1)[-1]
            if _is_i32(off_type):
                narrow.append(text)
            else:
                widened += 1
        elif op in arith or op == "arith.extsi":
            widened += 1
    small = [d for d in dots if d["min"] < MIN_DOT]
    checks = {
        "dot_sizes": _check(not small, f"{len(dots)} tl.dot, operand shapes "
                                       f"{sorted({str(d['shapes']) for d in dots})}"
                                       + (f"; below {MIN_DOT}: {small}" if small else "")),
        "masked_loads_have_other": _check(
            not loads_without_other, f"{masked} masked loads"
            + (f"; without other: {loads_without_other[:3]}" if loads_without_other else "")),
        "float_atomics": _check(not float_atoms, "none" if not float_atoms else
                                str(float_atoms[:3])),
        "int64_frame_offsets": _check(
            bool(seeds) and not narrow and axis is not None,
            (f"frame index (program id {axis}{', ' + ', '.join(frame_args) if frame_args else ''})"
             f": {widened} int64 operations, no int32 arithmetic on it" if not narrow else
             f"int32 arithmetic on the frame index: {narrow[:3]}") if axis else
            f"unknown kernel {kernel!r}: its frame index is not declared in FRAME_INDEX"),
    }
    return {"ok": all(c["ok"] for c in checks.values()), "dots": dots, "checks": checks}
