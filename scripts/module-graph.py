#!/usr/bin/env python3
"""Prints the graph of the crate's top-level modules (who uses whom, from
`crate::` paths in each file) and its cycles; exits 1 when there is one.

    scripts/module-graph.py            # the edges and "no cycles"
    scripts/module-graph.py --deep     # the same between second-level modules
"""
import os
import re
import sys

deep = "--deep" in sys.argv
src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def module_of(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def key(parts):
    return "::".join(parts[: 2 if deep else 1]) if parts else "crate"


edges = {}
for root, _, files in os.walk(src):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(root, f)
        me = module_of(path)
        if not me:
            continue
        text = open(path).read()
        # Test modules may reach anywhere.
        text = text.split("#[cfg(test)]")[0]
        paths = [m.group(1) for m in re.finditer(r"crate::((?:\w+::)*\w+)\b(?!::)", text)]
        # `use crate::a::{b, c::d}`: each name inside the braces.
        for m in re.finditer(r"crate::((?:\w+::)*)\{([^}]*)\}", text):
            for name in re.split(r"\s*,\s*", m.group(2)):
                name = name.strip().split(" as ")[0]
                if name and name != "self":
                    paths.append(m.group(1) + name.strip(":"))
                elif name == "self":
                    paths.append(m.group(1).rstrip(":"))
        for path in paths:
            target = path.split("::")
            if deep:
                # `crate::a::b` where b is an item, not a module, counts as a.
                cand = os.path.join(src, *target[:2])
                if not (os.path.isdir(cand) or os.path.exists(cand + ".rs")):
                    target = target[:1]
            a, b = key(me), key(target)
            if a != b and not b.startswith(a + "::") and not a.startswith(b + "::"):
                edges.setdefault(a, set()).add(b)
        for m in re.finditer(r"^\s*use super::(\w+)", text, re.M):
            parent = me[:-1]
            a, b = key(me), key(parent + [m.group(1)])
            if a != b and not b.startswith(a + "::") and not a.startswith(b + "::"):
                edges.setdefault(a, set()).add(b)

for a in sorted(edges):
    print(f"{a} -> {', '.join(sorted(edges[a]))}")

# Cycles: strongly connected components with more than one module.
index, low, stack, on, comps = {}, {}, [], set(), []
counter = [0]


def strong(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
    if v not in index:
        strong(v)
if comps:
    for c in comps:
        print("cycle: " + " <-> ".join(c))
    sys.exit(1)
print("no cycles")
