#!/usr/bin/env python3
"""Prints the import graph between the library's top-level modules and fails on a cycle.

A top-level module is a file `src/X.rs` or a folder `src/X/` (lib.rs, main.rs and the
binary-only `cli`/`commands` are left out: nothing in the library may name them, which
`scripts/check_layers.sh`-style greps check separately). An edge X -> Y is any `crate::Y`
path inside X, including `use crate::{Y, ...}` groups; `crate::Error`/`crate::Result` count
as edges to `error`, since lib.rs re-exports them from there. Tests inside a module count
too: a `#[cfg(test)]` import that closes a loop is still a loop for a reader.
"""
import os, re, sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
SKIP = {"lib", "main", "cli", "commands"}
ROOT_REEXPORTS = {"Error": "error", "Result": "error", "Outcome": "outcome"}


def modules():
    found = {}
    for entry in sorted(os.listdir(SRC)):
        path = os.path.join(SRC, entry)
        if entry.endswith(".rs"):
            name = entry[:-3]
            files = [path]
            sub = os.path.join(SRC, name)
            if os.path.isdir(sub):
                files += walk(sub)
        elif os.path.isdir(path):
            name = entry
            files = walk(path)
        else:
            continue
        if name not in SKIP:
            found.setdefault(name, [])
            found[name] += [f for f in files if f not in found[name]]
    return found


def walk(folder):
    out = []
    for base, _, names in os.walk(folder):
        out += [os.path.join(base, n) for n in names if n.endswith(".rs")]
    return out


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def targets(text, names):
    text = strip_comments(text)
    hits = set()
    for m in re.finditer(r"crate::(\w+)", text):
        hits.add(m.group(1))
    # use crate::{a::b, c, Error};
    for m in re.finditer(r"crate::\{([^;]*?)\}\s*;", text, flags=re.S):
        depth, item = 0, ""
        for ch in m.group(1) + ",":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                head = item.strip().split("::")[0].strip()
                if head:
                    hits.add(head)
                item = ""
            else:
                item += ch
    out = set()
    for h in hits:
        h = ROOT_REEXPORTS.get(h, h)
        if h in names or h in SKIP:
            out.add(h)
    return out


def main():
    mods = modules()
    names = set(mods)
    graph = {}
    for name, files in mods.items():
        deps = set()
        for f in files:
            with open(f, encoding="utf-8") as fh:
                deps |= targets(fh.read(), names)
        deps.discard(name)
        graph[name] = sorted(deps)
    bad = False
    for name in sorted(graph):
        flags = [d for d in graph[name] if d in SKIP]
        print(f"{name:10} -> {', '.join(graph[name]) or '-'}")
        if flags:
            print(f"  error: library module {name} names {', '.join(flags)}")
            bad = True
    # cycle search (DFS with colours); prints every back edge's loop
    colour, stack, cycles = {}, [], []

    def visit(n):
        colour[n] = 1
        stack.append(n)
        for d in graph.get(n, []):
            if d not in graph:
                continue
            if colour.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif colour.get(d) is None:
                visit(d)
        stack.pop()
        colour[n] = 2

    for n in sorted(graph):
        if colour.get(n) is None:
            visit(n)
    for c in cycles:
        print("cycle: " + " -> ".join(c))
    if cycles or bad:
        sys.exit(1)
    print("no cycle between top-level library modules")


if __name__ == "__main__":
    main()
