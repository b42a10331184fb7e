#!/usr/bin/env python3
"""The shape of the code (issue 25), measured from the sources as text, so a restructure can be
compared before and after: lines per module, the ten longest functions, the modules outside
`src/db/`, `src/store/` and `src/customers/` that write SQL, the modules that change a report's state, and the
cycles of the module import graph. Run from anywhere: `python3 scripts/code-shape.py`."""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
# A statement's keyword opens a string or follows a space in it; "(CREATE INDEX ...)" in a
# message to the operator is advice, not SQL.
SQL = re.compile(r'"(?:[^"]*\s)?(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE TABLE|CREATE INDEX)\b')
STATE_CHANGE = re.compile(r"SET state =|reports::transition\(|\bset_state\(")


def modules():
    for folder, _, files in os.walk(SRC):
        for name in sorted(files):
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                yield os.path.relpath(path, ROOT), open(path, encoding="utf-8").read()


def module_name(path):
    """`src/db/mod.rs` -> `db`, `src/store/reports.rs` -> `store::reports`."""
    parts = path[len("src/"):-len(".rs")].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return "::".join(parts) or "crate"


def code_lines(text):
    """The lines before the file's `#[cfg(test)]` module (unit tests are not the module)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            return lines[:i]
    return lines


def functions(path, lines):
    """(lines, path:line name) of every fn, counted from its signature to its closing brace."""
    found = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(pub(\([a-z]+\))?\s+)?(async\s+)?fn\s+(\w+)", line)
        if not m:
            continue
        depth, opened = 0, False
        for j in range(i, len(lines)):
            code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j].split("//")[0])
            depth += code.count("{") - code.count("}")
            opened = opened or "{" in code
            if opened and depth <= 0:
                found.append((j - i + 1, f"{path}:{i + 1} {m.group(4)}"))
                break
            if not opened and code.rstrip().endswith(";"):
                break
    return found


def imports(text, names):
    """The crate modules a file names (`use crate::x`, `crate::x::y`, `use super::...` left out)."""
    used = set()
    # Comments name modules without importing them (doc links).
    text = "\n".join(line.split("//")[0] for line in text.splitlines())
    for m in re.finditer(r"crate::((?:\w+::)*\w+)", text):
        parts = m.group(1).split("::")
        for n in range(len(parts), 0, -1):
            candidate = "::".join(parts[:n])
            if candidate in names:
                used.add(candidate)
                break
    for m in re.finditer(r"use crate::\{([^}]*)\}", text):
        for item in re.split(r"[,\s]+", m.group(1)):
            item = item.split("::")[0].strip()
            if item in names:
                used.add(item)
    return used


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    mods = list(modules())
    names = {module_name(p) for p, _ in mods}
    print("lines per module (without unit tests):")
    sizes = sorted(((len(code_lines(t)), p) for p, t in mods), reverse=True)
    for n, p in sizes:
        print(f"  {n:5d}  {p}")
    print(f"  {sum(n for n, _ in sizes):5d}  in {len(sizes)} modules")
    print("\nthe ten longest functions:")
    every = []
    for p, t in mods:
        every.extend(functions(p, code_lines(t)))
    for n, where in sorted(every, reverse=True)[:10]:
        print(f"  {n:5d}  {where}")
    writers = [
        p for p, t in mods
        if not p.startswith(("src/db/", "src/store/", "src/customers/")) and SQL.search("\n".join(code_lines(t)))
    ]
    print(f"\nmodules outside src/db/, src/store/ and src/customers/ that write SQL: {len(writers)}")
    for p in writers:
        print(f"  {p}")
    changers = [p for p, t in mods if STATE_CHANGE.search("\n".join(code_lines(t)))]
    print(f"\nmodules that change a report's state: {len(changers)}")
    for p in changers:
        print(f"  {p}")
    graph = {module_name(p): imports("\n".join(code_lines(t)), names) - {module_name(p)} for p, t in mods}
    found = cycles(graph)
    print(f"\nimport cycles between modules: {len(found)}")
    for c in found:
        print("  " + " <-> ".join(c))


if __name__ == "__main__":
    main()
