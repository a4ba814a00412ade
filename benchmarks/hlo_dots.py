"""Which of a compiled XLA program's thunks are matmuls, and how many FLOPs each does.

Read from the optimised HLO text (`compiled.as_text()`): XLA:CPU runs each instruction of the
entry computation (and of loop bodies) as one thunk, named as in a jax.profiler trace; a thunk
is a matmul when it is a `dot` or a fusion whose computation holds one.  Its FLOPs are
2 x output elements x the contracted extent.  A dot with batch dimensions is a batched product
(in our encoders the two attention products per head, forward and backward); one without is a
plain 2-D matmul (the dense layers and their gradients).  The step profile splits its time
along these lines.
"""
from __future__ import annotations

import math
import re

BATCHED, PLAIN = "batched products (attention)", "2-D matmuls (dense layers)"

_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_ARRAY = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\w+\[([\d,]*)\]\S*\s+(\w[\w\-]*)\((.*)$")
_DIMS = re.compile(r"(lhs_batch_dims|lhs_contracting_dims)=\{([\d,]*)\}")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def _dims(text: str) -> list[int]:
    return [int(d) for d in text.split(",") if d]


def _computations(hlo_text: str) -> dict[str, list[str]]:
    """{computation name: its instruction lines}."""
    comps, current = {}, None
    for line in hlo_text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m:
                current = m.group(1)
                comps[current] = []
        elif line.strip() == "}":
            current = None
        else:
            comps[current].append(line)
    return comps


def _dot(line: str, shapes: dict) -> tuple[float, bool] | None:
    """(FLOPs, batched) of a `dot` instruction line; None for any other line."""
    m = _ARRAY.match(line)
    if not m or m.group(3) != "dot":
        return None
    out = _dims(m.group(2))
    lhs = re.match(r"\s*%?([\w.\-]+)", m.group(4)).group(1)
    attrs = dict(_DIMS.findall(line))
    contracted = math.prod(shapes[lhs][d] for d in _dims(attrs.get("lhs_contracting_dims", "")))
    return 2.0 * math.prod(out) * contracted, bool(_dims(attrs.get("lhs_batch_dims", "")))


def matmul_thunks(hlo_text: str) -> dict[str, dict]:
    """{instruction name: {"kind": BATCHED or PLAIN, "flops": FLOPs per execution}} for every
    `dot` and every fusion holding dots (a fusion with several takes the kind of its first).
    Instruction names are unique in a module, so a trace's thunk names look up directly; the
    dots inside fusions are listed too but never run as thunks of their own."""
    comps = _computations(hlo_text)
    shapes = {}
    for lines in comps.values():
        for line in lines:
            m = _ARRAY.match(line)
            if m:
                shapes[m.group(1)] = _dims(m.group(2))

    def dots_in(name: str, seen: frozenset = frozenset()) -> list[tuple[float, bool]]:
        found = []
        for line in comps.get(name, []):
            d = _dot(line, shapes)
            if d:
                found.append(d)
            for callee in _CALLS.findall(line):
                if callee not in seen:
                    found += dots_in(callee, seen | {name})
        return found

    thunks = {}
    for lines in comps.values():
        for line in lines:
            m = _ARRAY.match(line)
            if not m:
                continue
            d = _dot(line, shapes)
            callee = _CALLS.search(line) if m.group(3) == "fusion" else None
            found = [d] if d else dots_in(callee.group(1)) if callee else []
            if found:
                thunks[m.group(1)] = {"kind": BATCHED if found[0][1] else PLAIN,
                                      "flops": sum(f for f, _ in found)}
    return thunks
