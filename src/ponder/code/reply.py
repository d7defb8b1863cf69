"""A model's reply to a fix prompt, turned into one unified diff.

Small models rarely write a diff that applies, but they do write code: so besides a unified
diff, a fenced Python block counts as a patch when it is

- a whole file: the file a path in the fence's info string, the block's first comment
  line (`# file: pkg/x.py`) or the line before the fence names; else the only file shown;
  else the one shown file whose top-level definitions are exactly the block's. It replaces
  that file when it defines (at least) every function and class the file defines;
- or definitions: each top-level function or class replaces the same-named one in a shown
  file (a function no file defines at top level replaces a same-named method, re-indented;
  a class that lacks some of the file's methods replaces only the methods it holds); its
  imports the file lacks and now uses are added after the file's imports. Everything else in the file
  stays byte-identical; anything else in the block (usage examples) is left out.

A diff that does not apply falls back to the blocks. The first fenced block that changes
something other than a test file is the patch (its edits to test files left out): models
often echo the failing test and the code, before or beside the correction. The change is returned as a
diff (`make_diff`), so applying, checking and refusing edits to tests stay one path for
every kind of reply.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt

from ponder.code.patch import PatchError, apply_patch, changed_paths, is_test_file, make_diff

_DIFF_INFO = {"", "diff", "patch", "udiff"}
_PYTHON_INFO = {"", "python", "py", "python3"}
_PATHLIKE = re.compile(r"[\w./-]*\w\.py\b")
_Def = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
_markdown = MarkdownIt("zero").enable("fence")


@dataclass(frozen=True)
class Block:
    """One fenced block: its info string (`python`, `diff`, `python calc.py`), its code, and
    the last non-blank line before it (where models name the file)."""

    info: str
    code: str
    before: str = ""

    @property
    def language(self) -> str:
        return self.info.split()[0].lower() if self.info.split() else ""


@dataclass(frozen=True)
class ReplyPatch:
    """A reply's patch as a unified diff, and how it was read (for the trace)."""

    diff: str
    how: str


def fenced_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a markdown reply, in order (an unterminated last block counts)."""
    lines = text.splitlines()
    blocks = []
    for token in _markdown.parse(text):
        if token.type != "fence" or token.map is None:
            continue
        before = next((s.strip() for s in reversed(lines[: token.map[0]]) if s.strip()), "")
        blocks.append(Block(token.info.strip(), token.content, before))
    return blocks


def extract_diff(text: str) -> str | None:
    """The diff in a reply: the fenced blocks that look like one, else the text from its
    first `--- ` header."""
    diffs = [
        b.code
        for b in fenced_blocks(text)
        if b.language in _DIFF_INFO and re.search(r"^(---|\+\+\+|@@)", b.code, re.MULTILINE)
    ]
    if diffs:
        return "".join(d if d.endswith("\n") else d + "\n" for d in diffs)
    start = re.search(r"^--- ", text, re.MULTILINE)
    return text[start.start() :] if start else None


def reply_patch(
    text: str, files: dict[str, str], shown: Sequence[str], *, protect_tests: bool = True
) -> ReplyPatch:
    """The patch a reply holds: its unified diff if it applies, else the first fenced Python
    block that changes one of the `shown` files (with `protect_tests`, a block's edits to
    test files are left out: models often echo the failing test, changed, next to the
    code); `PatchError` says why there is none. The caller still vets a diff's paths."""
    reasons = []
    if (diff := extract_diff(text)) is not None:
        try:
            apply_patch(files, diff)
            return ReplyPatch(diff, "a unified diff")
        except PatchError as exc:  # a reply may hold the code too
            reasons.append(f"the unified diff: {exc}")
    for n, block in enumerate(fenced_blocks(text), 1):
        if block.language not in _PYTHON_INFO and not _named_paths(block.info, shown):
            reasons.append(f"block {n} is {block.language}, not Python")
            continue
        try:
            after, how = block_patch(block, files, shown)
        except PatchError as exc:
            reasons.append(f"block {n}: {exc}")
            continue
        tests = [p for p in changed_paths(files, after) if protect_tests and is_test_file(p)]
        for path in tests:  # the block's code may be right even where its test is not
            if path in files:
                after[path] = files[path]
            else:
                del after[path]
        if changed_paths(files, after):
            left_out = f" (its edits to {', '.join(tests)} left out)" if tests else ""
            return ReplyPatch(make_diff(files, after), f"block {n}: {how}{left_out}")
        if tests:
            reasons.append(f"block {n} edits tests only ({', '.join(tests)}; {how})")
        else:
            reasons.append(f"block {n} changes nothing ({how})")
    if not reasons:
        raise PatchError(
            "the reply holds no unified diff and no ```python block; write the corrected function "
            "in a ```python block"
        )
    raise PatchError("no usable patch in the reply: " + "; ".join(reasons))


def block_patch(block: Block, files: dict[str, str], shown: Sequence[str]) -> tuple[dict[str, str], str]:
    """The repository after one Python block (a whole file, or definitions replaced by name),
    and a short account of what it replaced."""
    code = textwrap.dedent(block.code)
    if not code.strip():
        raise PatchError("the block is empty")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise PatchError(f"the code does not parse (line {exc.lineno}: {exc.msg})") from None
    defs = _definitions(tree.body)
    target = _target(block, code, defs, files, shown)
    if target is not None and (set(_definitions(_parse(files[target]).body)) <= set(defs)):
        return {**files, target: _whole_file(code, tree, target, files[target])}, f"the whole of {target}"
    if not defs:
        raise PatchError("the block defines no function or class and names no file it replaces")
    after = dict(files)
    replaced: list[str] = []
    unknown: list[str] = []
    edits: dict[str, list[tuple[int, int, str]]] = {}
    for name, node in defs.items():
        found = _locate(name, node, target, files, shown)
        if found is None:
            unknown.append(name)
            continue
        path, pairs, label = found
        edits.setdefault(path, []).extend(
            (*_span(old, decorators=bool(new.decorator_list)), _source(code, new, indent))
            for old, new, indent in pairs
        )
        replaced.append(f"{label} in {path}")
    if not replaced:
        where = ", ".join(shown) or "none"
        raise PatchError(f"defines {', '.join(unknown)}, which no file shown ({where}) defines")
    for path, spans in edits.items():
        after[path] = _add_imports(_splice(after[path], spans), tree, after[path], path)
    how = "replaces " + ", ".join(replaced)
    if unknown:
        how += f" (left out: {', '.join(unknown)}, defined in no file shown)"
    return after, how


def _whole_file(code: str, tree: ast.Module, path: str, original: str) -> str:
    """The block as the new text of `path`, without what is about the file rather than in it:
    a first comment naming the file, imports of the file itself, and a usage example after
    the last definition (unless the file ends with top-level code of its own)."""
    lines = code.splitlines(keepends=True)
    first = next((n for n, line in enumerate(lines, 1) if line.strip()), 1)
    drop: set[int] = set()
    if lines[first - 1].lstrip().startswith("#") and _named_paths(lines[first - 1], [path]):
        drop.add(first)
    for node in tree.body:
        if _imports_itself(node, path):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    if not _usage_tail(_parse(original)):
        for node in _usage_tail(tree):
            drop.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    kept = [line for n, line in enumerate(lines, 1) if n not in drop]
    return "".join(kept).strip("\n") + "\n"


def _usage_tail(tree: ast.Module) -> list[ast.stmt]:
    """The top-level expressions, asserts and `if __name__ == ...` blocks after the last definition."""
    last = max((i for i, n in enumerate(tree.body) if isinstance(n, _Def)), default=-1)
    tail = tree.body[last + 1 :]
    usage = (ast.Expr, ast.Assert, ast.If)
    if all(
        isinstance(n, usage) and (not isinstance(n, ast.If) or "__name__" in ast.unparse(n.test))
        for n in tail
    ):
        return tail
    return []


def _module_names(path: str) -> set[str]:
    """The dotted names `path` may be imported by (from the repository root, or `src/`, or
    any package root in between)."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return {".".join(parts[i:]) for i in range(len(parts))}


def _imports_itself(node: ast.stmt, path: str) -> bool:
    names = _module_names(path)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and node.module in names
    return isinstance(node, ast.Import) and any(a.name in names for a in node.names)


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError):
        return ast.Module(body=[], type_ignores=[])


def _definitions(body: Sequence[ast.stmt]) -> dict[str, _Def]:
    return {n.name: n for n in body if isinstance(n, _Def)}


def _span(node: _Def, decorators: bool = True) -> tuple[int, int]:
    """A definition's lines (1-based, inclusive), with its decorators or without (a block
    that writes a definition without decorators keeps the file's: models drop them when
    they copy code, and a fix rarely does)."""
    start = min([node.lineno, *(d.lineno for d in node.decorator_list if decorators)])
    return start, node.end_lineno or node.lineno


def _source(code: str, node: _Def, indent: int) -> str:
    start, end = _span(node)
    text = "".join(code.splitlines(keepends=True)[start - 1 : end])
    text = textwrap.indent(textwrap.dedent(text), " " * indent)
    return text if text.endswith("\n") else text + "\n"


def _named_paths(text: str, shown: Sequence[str]) -> list[str]:
    """The shown files a piece of text names (by the whole path or its tail)."""
    found = []
    for word in _PATHLIKE.findall(text):
        word = word.lstrip("./")
        hit = next((p for p in shown if p == word or p.endswith("/" + word) or word.endswith("/" + p)), None)
        if hit:
            found.append(hit)
    return list(dict.fromkeys(found))


def _target(
    block: Block, code: str, defs: dict[str, _Def], files: dict[str, str], shown: Sequence[str]
) -> str | None:
    """The file the block is meant to be: named, the only one shown, or the one whose
    top-level definitions are exactly the block's."""
    first = code.lstrip().splitlines()[0] if code.strip() else ""
    for hint in (block.info, first if first.startswith("#") else "", block.before):
        named = _named_paths(hint, shown)
        if len(named) == 1:
            return named[0]
    python = [p for p in shown if p.endswith(".py")]
    if len(python) == 1:
        return python[0]
    same = [p for p in python if defs and set(_definitions(_parse(files[p]).body)) == set(defs)]
    return same[0] if len(same) == 1 else None


Pairs = list[tuple[_Def, _Def, int]]
"""(the file's definition, the block's that replaces it, the indent it goes at)"""


def _locate(
    name: str, node: _Def, target: str | None, files: dict[str, str], shown: Sequence[str]
) -> tuple[str, Pairs, str] | None:
    """Where the block's definition `name` goes: the target file first, then any shown
    file; a top-level definition of that name first, then a method of that name."""
    order = [target] if target else []
    order += [p for p in shown if p.endswith(".py") and p != target]
    for methods in (False, True):
        hits: list[tuple[str, tuple[_Def, int]]] = []
        for path in order:
            hits += [(path, match) for match in _matches(_parse(files[path]), name, methods)]
            if hits and path == target:
                break
        if len(hits) > 1:
            where = ", ".join(sorted({p for p, _ in hits}))
            raise PatchError(f"{name} is defined more than once ({where}); name the file or the class")
        if hits:
            path, (old, indent) = hits[0]
            if isinstance(node, ast.ClassDef) and isinstance(old, ast.ClassDef):
                return path, _class_edit(old, node), f"class {name}"
            return path, [(old, node, indent)], f"{name}()" if indent == 0 else f"method {name}()"
    return None


def _matches(tree: ast.Module, name: str, methods: bool) -> list[tuple[_Def, int]]:
    if not methods:
        return [(n, 0) for n in tree.body if isinstance(n, _Def) and n.name == name]
    return [
        (m, m.col_offset)
        for c in tree.body
        if isinstance(c, ast.ClassDef)
        for m in c.body
        if isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef) and m.name == name
    ]


def _class_edit(old: ast.ClassDef, new: ast.ClassDef) -> Pairs:
    """A class replaces the file's class whole when it has all its methods, else only the
    methods it holds (a model often writes just the one it fixed, inside its class)."""
    old_members, new_members = _definitions(old.body), _definitions(new.body)
    if set(old_members) <= set(new_members):
        return [(old, new, old.col_offset)]
    return [
        (old_members[n], m, old_members[n].col_offset) for n, m in new_members.items() if n in old_members
    ]


def _splice(source: str, spans: list[tuple[int, int, str]]) -> str:
    """`source` with each (first, last line, text) span replaced, bottom up so the line
    numbers of the others stay valid."""
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for start, end, text in sorted(spans, reverse=True):
        lines[start - 1 : end] = [text]
    return "".join(lines)


def _add_imports(source: str, block: ast.Module, original: str, path: str) -> str:
    """`source` (the file at `path`) with the block's top-level imports that `original`
    lacks and `source` uses, after its last top-level import (or its docstring, or at the
    top); never an import of the file itself (a usage example imports what it fixed)."""
    have = {ast.unparse(n) for n in _parse(original).body if isinstance(n, ast.Import | ast.ImportFrom)}
    used = {n.id for n in ast.walk(_parse(source)) if isinstance(n, ast.Name)}
    new = [
        ast.unparse(n)
        for n in block.body
        if isinstance(n, ast.Import | ast.ImportFrom)
        and ast.unparse(n) not in have
        and not _imports_itself(n, path)
        and any((a.asname or a.name.split(".")[0]) in used for a in n.names)
    ]
    if not new:
        return source
    tree = _parse(source)
    imports = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    lines = source.splitlines(keepends=True)
    if imports:
        at, text = imports[-1].end_lineno or 0, "".join(f"{line}\n" for line in new)
    elif tree.body and isinstance(tree.body[0], ast.Expr):  # after the module docstring
        at, text = tree.body[0].end_lineno or 0, "".join(f"\n{line}" for line in new) + "\n"
    else:
        at, text = 0, "".join(f"{line}\n" for line in new) + "\n\n"
    lines[at:at] = [text]
    return "".join(lines)
