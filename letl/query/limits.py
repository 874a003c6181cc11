"""Size rules of the SQL guard: what one expression may build, decided before DuckDB runs it.

DuckDB's ``memory_limit`` covers its buffer manager (joins, sorts, aggregate states), not the
vectors an expression fills: ``generate_series(1, 100000000)`` or ``lpad('x', 2000000000)`` is
one function call that allocates gigabytes and checks no interrupt until it returns (measured:
7 GB RSS under a 1 GB limit; an ``interrupt()`` during ``lpad`` was lost and the query finished).
So a call whose output size is set by an argument needs that argument to be a literal, small
enough that 2,048 rows of it (one DuckDB vector) stay far below the limit; lambdas and recursive
CTEs, which multiply a value within a single call or step, are refused outright.
"""
from __future__ import annotations

import re

__all__ = ["MAX_GENERATED", "check_sizes"]

# Elements or characters all size-setting calls of one query may build together: a calendar of
# eleven years of days, or a zero-padded code, fits; 2,048 rows of it are 64 MiB at most.
MAX_GENERATED = 4_096

# function -> position of the argument that sets the output size
_SIZED = {"lpad": 1, "rpad": 1, "list_resize": 1, "array_resize": 1, "bitstring": 1}
_PRINTF_SPEC = re.compile(r"%([^a-zA-Z%]*)")  # flags, position, width, precision: up to the conversion
_FORMAT_SPEC = re.compile(r"\{([^{}]*)(\{?)")


class SizeRefused(ValueError):
    """Raised with a message the guard turns into UnsafeSQL(reason="size")."""


def _literal(arg: dict | None, kind: str) -> str | None:
    expr = (arg or {}).get("expression") or {}
    lit = expr.get("literal") or {}
    return lit.get("text") if expr.get("class") == "CONSTANT" and lit.get("kind") == kind else None


def _integer(fn: str, args: list, i: int) -> int:
    text = _literal(args[i] if i < len(args) else None, "INTEGER")
    if text is None:
        raise SizeRefused(f"{fn}() needs an integer literal as argument {i + 1} "
                          f"(it sets how much the call builds; at most {MAX_GENERATED:,})")
    return int(text)


def _series(fn: str, args: list) -> int:
    if not 1 <= len(args) <= 3:
        raise SizeRefused(f"{fn}() takes one to three integer literals here")
    values = [_integer(fn, args, i) for i in range(len(args))]
    start, stop = (0, values[0]) if len(values) == 1 else values[:2]
    step = values[2] if len(values) == 3 else 1
    if step == 0:
        raise SizeRefused(f"{fn}() needs a step other than 0")
    span = (stop - start) // step + (fn == "generate_series")  # generate_series includes its stop
    return max(span, 0)


def _widths(fn: str, args: list) -> int:
    text = _literal(args[0] if args else None, "STRING")
    if text is None:
        raise SizeRefused(f"{fn}() needs a string literal as its format")
    total = 0
    for m in (_PRINTF_SPEC if fn == "printf" else _FORMAT_SPEC).finditer(text):
        # printf's "*" and format's nested "{}" take the width from an argument: no literal to bound
        if ("*" in m.group(1)) if fn == "printf" else m.group(2):
            raise SizeRefused(f"{fn}() widths must be written in the format, not passed as arguments")
        total += sum(int(w) for w in re.findall(r"\d+", m.group(1)))
    return total


def _size(fn: str, args: list) -> int:
    if fn in ("generate_series", "range"):
        return _series(fn, args)
    if fn == "repeat":
        text = _literal(args[0] if args else None, "STRING")
        if text is None:
            raise SizeRefused("repeat() repeats only a string literal here")
        return len(text) * _integer(fn, args, 1)
    if fn in ("printf", "format"):
        return _widths(fn, args)
    return _integer(fn, args, _SIZED[fn])


def check_sizes(nodes) -> None:
    """Refuse a query (its parsed nodes, every dict of the tree) that could build a value past
    the budget inside one call, where neither the memory limit nor an interrupt reaches."""
    total = 0
    for d in nodes:
        if d.get("class") == "LAMBDA":
            raise SizeRefused("lambda functions and list comprehensions are not allowed "
                              "(one call can multiply a list past the memory limit)")
        if d.get("type") == "RECURSIVE_CTE_NODE":
            raise SizeRefused("recursive WITH queries are not allowed (each step can double a value "
                              "and nothing bounds the steps)")
        fn = str(d.get("function_name", "")).lower() if d.get("class") == "FUNCTION" else ""
        if fn in _SIZED or fn in ("generate_series", "range", "repeat", "printf", "format"):
            total += max(_size(fn, d.get("arguments") or []), 0)  # a negative count builds nothing
            if total > MAX_GENERATED:
                raise SizeRefused(f"the query builds too much with {fn}() and similar calls "
                                  f"(at most {MAX_GENERATED:,} values or characters in all)")
