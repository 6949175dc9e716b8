#!/usr/bin/env python3
"""Fails when the modules under src/ import each other in a cycle, naming every cycle.

Usage: scripts/check_imports.py [SRC_DIR]     (default: the checkout's src/)

Data flows one way through db-sync, and the folders are meant to show it: a module never
imports from one downstream of it. This script checks it at every level of the tree: among
the top-level modules (`src/apply`, `src/audit.rs`, ...), and among the files of each module
that is a directory (`src/apply/write.rs`, `src/apply/moves.rs`, ...), and so on down.

What counts as a reference from file A to file B: a path in A, in a `use` or in code
(`crate::journal::segments`, `super::write::Chunk`, `write::Chunk` in a module root), that
names B's module or an item defined in B. Resolution follows Rust's:

- `crate::`, `super::`, `self::` and a child module's name start a path; other first names
  are external crates or imported names, whose `use` is counted where it is written.
- A module root (`mod.rs`) is the module itself, not one of its files: what it defines (the
  module's error type, the types its files share, the code that puts them together) is
  there for all of them, so it is no node of the graph among its files. Its `pub use`
  re-exports are its public face: a path through one counts as a path to the file that
  defines the item.
- Test code (`#[cfg(test)]` items and the files of `#[cfg(test)] mod x;`) is left out: a test
  may reach any module. Comments, doc comments and string literals are left out.
- `src/main.rs` and `src/build.rs` are crates of their own and are not read.

Output: one block per cycle (a strongly connected set of nodes), with a shortest cycle through
it and, for each of its edges, the file and line that makes it. Exit 1 when there is any, or
when the check fails its own test on a small crate first (`SELF_TEST`).
"""
import os
import re
import sys
from collections import defaultdict

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
# One pass finds the keywords the reader needs: item names, module declarations, `use`s.
KEYWORD_RE = re.compile(
    r"\b(fn|struct|enum|union|trait|type|const|static|mod|macro_rules!|use)(?![\w!])\s*"
    r"(?:(" + IDENT + r")\s*([;{])?)?"
)
PUB_RE = re.compile(r"\bpub\s*(\([^)]*\))?\s*$")
IDENT_RE = re.compile(IDENT)
TEST_MOD_RE = re.compile(r"\s*(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*([;{])")
PATH_RE = re.compile(r"(?<![\w:$])(\$?" + IDENT + r")((?:\s*::\s*" + IDENT + r")+)")


TOKEN_RE = re.compile(
    r"//[^\n]*"
    r"|/\*"
    r"|(?<![\w])b?r(#*)\""
    r"|(?<![\w])b?\"(?:\\.|[^\"\\])*\""
    r"|'(?:\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'",  # a char literal, not a lifetime ('a)
    re.S,
)


def strip(text):
    """Comments, strings and char literals blanked (newlines kept), so positions and line
    numbers stay those of the file."""
    out, pos = [], 0
    while True:
        m = TOKEN_RE.search(text, pos)
        if not m:
            out.append(text[pos:])
            return "".join(out)
        end = m.end()
        if m.group(0) == "/*":  # block comments nest
            depth = 1
            while end < len(text) and depth:
                if text.startswith("/*", end):
                    depth, end = depth + 1, end + 2
                elif text.startswith("*/", end):
                    depth, end = depth - 1, end + 2
                else:
                    end += 1
        elif m.group(1) is not None:  # a raw string ends at its own number of #
            close = text.find('"' + m.group(1), end)
            end = len(text) if close < 0 else close + 1 + len(m.group(1))
        out.append(text[pos:m.start()])
        token = text[m.start():end]
        out.append("\n".join(" " * len(line) for line in token.split("\n")))
        pos = end


def matching_brace(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def strip_tests(code):
    """`#[cfg(test)]` items blanked; returns the code and the names of test-only child
    modules declared as files (`#[cfg(test)] mod tests;`)."""
    test_mods = set()
    out = list(code)
    for m in re.finditer(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", code):
        j = m.end()
        # Further attributes of the same item.
        while True:
            a = re.match(r"\s*#\s*\[", code[j:])
            if not a:
                break
            depth, k = 0, j + a.end() - 1
            while k < len(code):
                depth += {"[": 1, "]": -1}.get(code[k], 0)
                k += 1
                if depth == 0:
                    break
            j = k
        decl = TEST_MOD_RE.match(code, j)
        if decl and decl.group(2) == ";":
            test_mods.add(decl.group(1))
        semi, brace = code.find(";", j), code.find("{", j)
        end = semi if brace < 0 or (0 <= semi < brace) else matching_brace(code, brace)
        for k in range(m.start(), end + 1):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out), test_mods


def parse_use_tree(s):
    """`a::{b, c::{self, D as E}}` → [[a, b], [a, c], [a, c, D]] (`self` ends a path at its
    prefix, `*` is kept as a segment, renames dropped)."""
    s = re.sub(r"\s+", "", s)
    pos = 0

    def tree(prefix):
        nonlocal pos
        paths = []
        segs = list(prefix)
        while pos < len(s):
            if s[pos] == "{":
                pos += 1
                while True:
                    paths += tree(segs)
                    if pos < len(s) and s[pos] == ",":
                        pos += 1
                        if pos < len(s) and s[pos] == "}":
                            break
                        continue
                    break
                pos += 1  # the closing brace
                return paths
            m = re.match(r"(\$?" + IDENT + r"|\*)", s[pos:])
            if not m:
                break
            pos += len(m.group(0))
            seg = m.group(0)
            if seg == "self" and segs:
                pass
            else:
                segs.append(seg)
            if s.startswith("::", pos):
                pos += 2
                continue
            if s.startswith("as", pos):
                r = re.match(r"as(" + IDENT + r")", s[pos:])
                if r:
                    pos += len(r.group(0))
            break
        paths.append(segs)
        return paths

    return tree([])


class File:
    def __init__(self, path, module):
        self.path = path
        self.module = tuple(module)
        raw = open(path, encoding="utf-8").read()
        self.code, self.test_mods = strip_tests(strip(raw))
        self.lines = [0] + [m.end() for m in re.finditer("\n", self.code)]
        # Inline modules: (start, end, name), for what `super::` means inside them.
        self.inline = []
        self.children = set()
        self.items = set()
        # `pub use` of the module root: name → path it re-exports; globs kept apart.
        self.reexports, self.globs = {}, []
        self.uses = []  # (position, segments, is a `pub use`)
        self.use_spans = []
        for m in KEYWORD_RE.finditer(self.code):
            word, name, ends = m.groups()
            if word == "use":
                self.read_use(m.start(), m.start() + 3)
                continue
            if name:
                self.items.add(name)
            if word == "mod" and ends:
                self.children.add(name)
                if ends == "{":
                    self.inline.append((m.end() - 1, matching_brace(self.code, m.end() - 1), name))

    def read_use(self, start, after):
        end = self.code.find(";", after)
        self.use_spans.append((start, end))
        public = bool(PUB_RE.search(self.code, max(0, start - 20), start))
        tree = self.code[after:end]
        for segs in parse_use_tree(tree):
            self.uses.append((start, segs, public))
            if public and segs:
                if segs[-1] == "*":
                    self.globs.append(segs[:-1])
                else:
                    alias = re.search(r"\b" + re.escape(segs[-1]) + r"\s+as\s+(" + IDENT + r")", tree)
                    self.reexports[alias.group(1) if alias else segs[-1]] = segs

    def line(self, pos):
        lo, hi = 0, len(self.lines) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.lines[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1

    def module_at(self, pos):
        mod = list(self.module)
        for start, end, name in sorted(self.inline):
            if start < pos <= end:
                mod.append(name)
        return tuple(mod)


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}
        for root, _, names in os.walk(src):
            for name in sorted(names):
                if not name.endswith(".rs"):
                    continue
                rel = os.path.relpath(os.path.join(root, name), src)
                if rel in ("main.rs", "build.rs"):
                    continue
                parts = rel[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib"):
                    parts = parts[:-1]
                self.files[tuple(parts)] = File(os.path.join(root, name), parts)
        # Files of `#[cfg(test)] mod x;` and the files below them.
        tests = {f.module + (t,) for f in self.files.values() for t in f.test_mods}
        self.files = {m: f for m, f in self.files.items() if not any(m[:len(t)] == t for t in tests)}
        self.inline_mods = set()
        for f in self.files.values():
            for _, _, name in f.inline:
                self.inline_mods.add(f.module + (name,))

    def is_module(self, mod):
        return mod in self.files or mod in self.inline_mods

    def file_of(self, mod):
        while mod not in self.files:
            mod = mod[:-1]
        return mod

    def resolve(self, context, segs, depth=0):
        """The file module that the path `segs`, written in module `context`, lands in."""
        if not segs or depth > 8:
            return None
        first, rest = segs[0], list(segs[1:])
        if first in ("crate", "$crate"):
            base = ()
        elif first in ("super", "self"):
            base = context if first == "self" else context[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif self.is_module(context + (first,)):
            base = context + (first,)
        else:
            return None  # an external crate, or a name a `use` brought in
        while rest and self.is_module(base + (rest[0],)):
            base, rest = base + (rest[0],), rest[1:]
        if rest and rest[0] != "*" and base in self.files:
            root = self.files[base]
            name = rest[0]
            if name not in root.items:
                if name in root.reexports:
                    return self.resolve(base, root.reexports[name], depth + 1)
                for g in root.globs:
                    target = self.resolve(base, g, depth + 1)
                    if target is not None and name in self.files[target].items:
                        return target
        return self.file_of(base)

    def edges(self):
        """(from file, to file) → [(line, path text)]."""
        out = defaultdict(list)
        for mod, f in self.files.items():
            refs = [(pos, segs) for pos, segs, public in f.uses if not (public and f.children & {segs[0]})]
            spans = iter(f.use_spans)
            span = next(spans, None)
            for m in PATH_RE.finditer(f.code):
                while span is not None and span[1] < m.start():
                    span = next(spans, None)
                if span is not None and span[0] <= m.start():
                    continue  # a path inside a `use`: read from its tree above
                segs = [m.group(1)] + IDENT_RE.findall(m.group(2))
                refs.append((m.start(), segs))
            for pos, segs in refs:
                target = self.resolve(f.module_at(pos), segs)
                if target is not None and target != mod:
                    out[(mod, target)].append((f.line(pos), "::".join(segs)))
        return out


def cycles(nodes, graph):
    """Strongly connected sets of more than one node (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return found


def shortest_cycle(scc, graph):
    """A shortest cycle through the first node of `scc`, as a path that ends where it starts."""
    start, members = scc[0], set(scc)
    prev, queue = {start: None}, [start]
    for v in queue:
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return scc + [scc[0]]  # not reached: every node of a strongly connected set is on a cycle


def show(mod, crate, level):
    """How a node is named in a report: its file, relative to src/."""
    if mod == level:
        return "lib.rs" if not mod else "/".join(mod) + "/mod.rs"
    f = crate.files.get(mod)
    if f is None or os.path.basename(f.path) == "mod.rs":
        return "/".join(mod) + "/"  # a directory: every file beneath it
    return os.path.relpath(f.path, crate.src)


def report(src):
    """Prints every cycle under `src`; returns how many."""
    crate = Crate(os.path.normpath(src))
    edges = crate.edges()
    # Every module that is a directory (and the crate root) is a level: its nodes are its
    # children, each standing for every file beneath it (its root file is no node).
    levels = {()} | {m for m, f in crate.files.items() if os.path.basename(f.path) == "mod.rs"}
    problems = 0
    for level in sorted(levels):
        depth = len(level)
        node = lambda m: m[:depth + 1] if len(m) > depth else m
        graph, why = defaultdict(set), defaultdict(list)
        nodes = set()
        for (a, b), refs in edges.items():
            if a[:depth] != level or b[:depth] != level:
                continue
            na, nb = node(a), node(b)
            if level in (na, nb):
                continue  # the module root: see the module doc
            nodes |= {na, nb}
            if na != nb:
                graph[na].add(nb)
                why[(na, nb)] += [(a, line, text) for line, text in refs]
        for scc in cycles(nodes, graph):
            problems += 1
            path = shortest_cycle(scc, graph)
            where = "the top-level modules of src/" if not level else "the files of src/" + "/".join(level) + "/"
            names = lambda n: show(n, crate, level)
            print(f"import cycle among {where}: {' -> '.join(names(n) for n in path)}")
            if len(scc) > len(path) - 1:
                print(f"  (the cycle is part of a larger tangle: {', '.join(names(n) for n in scc)})")
            for a, b in zip(path, path[1:]):
                refs = sorted(why[(a, b)], key=lambda r: (r[0], r[1]))
                for f, line, text in refs[:3]:
                    print(f"  {os.path.relpath(crate.files[f].path, crate.src)}:{line} uses {text}")
                if len(refs) > 3:
                    print(f"  ... and {len(refs) - 3} more from {names(a)} to {names(b)}")
    return problems


# A crate with one cycle between files of `a/` (through a re-export of its root, and from a
# directory module), and references the check must not count: in a comment, a string, test
# code, a module root's own items and its `pub use`.
SELF_TEST = {
    "lib.rs": "//! uses crate::c::X in docs only\npub mod a;\npub mod c;\n",
    "c.rs": "pub struct X;\nfn f() { let s = \"crate::a::Y\"; }\n"
            "#[cfg(test)]\nmod tests { use crate::a::Y; }\n",
    "a/mod.rs": "mod b;\nmod d;\npub use d::Y;\npub struct E;\nfn g() -> d::Y { b::inner::Z; d::Y }\n",
    "a/d.rs": "pub struct Y;\nuse super::b::inner::Z;\nfn h() -> super::E { super::E }\n",
    "a/b/mod.rs": "pub mod inner;\npub mod other;\n",
    "a/b/inner.rs": "pub struct Z;\nfn g() -> crate::c::X { super::other::W; super::super::E }\n",
    "a/b/other.rs": "pub struct W;\nfn h() { let _ = '\"'; crate::a::Y; }\n",
}


def self_test():
    import contextlib
    import io
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in SELF_TEST.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            found = report(tmp)
    expected = "import cycle among the files of src/a/: a/b/ -> a/d.rs -> a/b/"
    if found != 1 or expected not in out.getvalue():
        print(f"check_imports.py self-test failed: expected only\n  {expected}\ngot:\n{out.getvalue()}",
              file=sys.stderr)
        return 1
    return 0


def main():
    if self_test():
        return 1
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, os.pardir, "src")
    problems = report(src)
    if problems:
        print(f"{problems} import cycle(s): move what both sides need below both (or the user "
              "above what it uses), so each level forms a DAG", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
