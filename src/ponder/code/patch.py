"""Unified diffs from a model, applied to a repository held in memory.

Models write diffs with wrong line numbers and counts far more often than with wrong
content, so a hunk is placed by its content (the context and removed lines, exactly, then
ignoring trailing whitespace), nearest to the line number it claims; the numbers only
break ties. A hunk that matches nowhere, or a path outside the repository, fails the
whole patch with a reason the model can act on. Parsing is `whatthepatch`'s.
"""

from __future__ import annotations

import difflib
import posixpath
from collections.abc import Iterable

import whatthepatch


class PatchError(ValueError):
    """A diff that cannot be applied; the message says which file or hunk and why."""


def _clean_path(path: str | None) -> str | None:
    if not path or path == "/dev/null":
        return None
    path = path.strip().split("\t")[0]
    if path.startswith(("a/", "b/")):
        path = path[2:]
    path = posixpath.normpath(path)
    if path.startswith(("/", "../")) or path == "..":
        raise PatchError(f"the diff names a path outside the repository: {path}")
    return path


def _find(lines: list[str], block: list[str], near: int) -> int | None:
    """Where `block` occurs in `lines` (exactly, else ignoring trailing whitespace), the
    occurrence nearest to line index `near`."""
    if not block:
        return min(max(near, 0), len(lines))
    for norm in (lambda s: s, lambda s: s.rstrip()):
        want = [norm(b) for b in block]
        hits = [
            i
            for i in range(len(lines) - len(block) + 1)
            if [norm(x) for x in lines[i : i + len(block)]] == want
        ]
        if hits:
            return min(hits, key=lambda i: abs(i - near))
    return None


def _hunks(changes: Iterable[object]) -> list[list[object]]:
    grouped: dict[int, list[object]] = {}
    for c in changes:
        grouped.setdefault(getattr(c, "hunk", 0), []).append(c)
    return [grouped[k] for k in sorted(grouped)]


def _apply_file(text: str, changes: list[object], path: str) -> str:
    lines = text.splitlines()
    offset = 0
    for n, hunk in enumerate(_hunks(changes), 1):
        old = [c.line for c in hunk if c.old is not None]  # type: ignore[attr-defined]
        new = [c.line for c in hunk if c.new is not None]  # type: ignore[attr-defined]
        claimed = next((c.old for c in hunk if c.old is not None), 1) - 1  # type: ignore[attr-defined]
        at = _find(lines, old, claimed + offset)
        if at is None:
            shown = "\n".join(old[:6])
            raise PatchError(f"hunk {n} of {path} does not match the file; it expects these lines:\n{shown}")
        lines[at : at + len(old)] = new
        offset += len(new) - len(old)
    return "\n".join(lines) + ("\n" if lines else "")


def apply_patch(files: dict[str, str], diff: str) -> dict[str, str]:
    """The repository after `diff` (a new dict; `files` is left as it was)."""
    patches = [p for p in whatthepatch.parse_patch(diff) if p.header is not None]
    if not patches:
        raise PatchError("no unified diff found: write one with ---/+++ headers and @@ hunks")
    out = dict(files)
    for p in patches:
        old = _clean_path(p.header.old_path)
        new = _clean_path(p.header.new_path)
        changes = list(p.changes or [])
        if new is None and old is not None:  # deleted
            if old not in out:
                raise PatchError(f"the diff deletes {old}, which does not exist")
            del out[old]
            continue
        target = new or old
        assert target is not None
        source = old if old in out else target
        if source not in out and any(c.old is not None for c in changes):
            raise PatchError(f"the diff changes {source}, which does not exist")
        if not changes:
            raise PatchError(f"the diff for {target} has no hunks")
        out[target] = _apply_file(out.get(source, ""), changes, target)
        if source != target:
            out.pop(source, None)
    return out


def make_diff(before: dict[str, str], after: dict[str, str]) -> str:
    """A unified diff (git style, a/ and b/ paths) from one repository state to another."""
    chunks: list[str] = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        chunks.extend(
            difflib.unified_diff(
                (old or "").splitlines(keepends=True),
                (new or "").splitlines(keepends=True),
                fromfile=f"a/{path}" if old is not None else "/dev/null",
                tofile=f"b/{path}" if new is not None else "/dev/null",
            )
        )
    return "".join(c if c.endswith("\n") else c + "\n\\ No newline at end of file\n" for c in chunks)


def changed_paths(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def is_test_file(path: str) -> bool:
    """pytest's default test file names, and anything under a tests/ directory."""
    name = path.rsplit("/", 1)[-1]
    return (
        name.startswith("test_")
        or name.endswith("_test.py")
        or name == "conftest.py"
        or "/tests/" in f"/{path}"
    )
