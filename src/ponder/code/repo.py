"""A repository read into memory, and the part of it a prompt can hold.

Size limits (documented in the README's code section):
- a repository is read only if it has at most `MAX_FILES` text files of at most
  `MAX_FILE_BYTES` each and `MAX_REPO_BYTES` in all (skipping .git, virtualenvs, caches,
  binary files); beyond that `ponder fix` refuses with a one-line error.
- the prompt holds at most `PROMPT_CHARS` characters of source: the files the checks'
  output names (traceback frames, `path:line:` findings) first, then the modules those
  files import (a bug two files deep), then files whose names the output mentions, each
  whole or not at all.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

MAX_FILES = 2000
MAX_FILE_BYTES = 256 * 1024
MAX_REPO_BYTES = 8 * 1024 * 1024
PROMPT_CHARS = 6000
SKIP_DIRS = {
    ".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", ".mypy_cache",
    ".pytest_cache", ".ruff_cache", ".tox", "build", "dist", ".eggs",
}  # fmt: skip
_PATHS = re.compile(r"""(?:File ")?((?:[\w.-]+/)*[\w.-]+\.py)(?:", line |:)(\d+)?""")


class RepoError(ValueError):
    """A path that is no repository ponder can read: missing, too big, unreadable."""


def read_repo(root: Path) -> dict[str, str]:
    """Every text file under `root` (relative POSIX path -> text), within the size limits."""
    if not root.is_dir():
        raise RepoError(f"not a directory: {root}")
    files: dict[str, str] = {}
    total = 0
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(names):
            path = Path(folder, name)
            if path.is_symlink() or not path.is_file():
                continue
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                continue  # a data file, not source to fix
            raw = path.read_bytes()
            if b"\0" in raw:
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
            total += size
            files[path.relative_to(root).as_posix()] = text
            if len(files) > MAX_FILES or total > MAX_REPO_BYTES:
                raise RepoError(
                    f"{root} is too big for ponder fix: more than {MAX_FILES} files or "
                    f"{MAX_REPO_BYTES // (1024 * 1024)} MB of text; point it at a smaller directory"
                )
    if not files:
        raise RepoError(f"no text files under {root}")
    return files


def _module_path(name: str, files: dict[str, str]) -> str | None:
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py", f"src/{base}.py", f"src/{base}/__init__.py"):
        if candidate in files:
            return candidate
    return None


def imported_files(path: str, files: dict[str, str]) -> list[str]:
    """The repository's files that `path` imports (absolute imports and `from . import`)."""
    try:
        tree = ast.parse(files[path])
    except (SyntaxError, ValueError):
        return []
    package = posixpath_dir(path).replace("/", ".")
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            names = [base] + [f"{base}.{a.name}" if base else a.name for a in node.names]
        for name in names:
            if name and (hit := _module_path(name, files)) and hit != path:
                found.append(hit)
    return list(dict.fromkeys(found))


def posixpath_dir(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def mentioned_files(output: str, files: dict[str, str]) -> list[str]:
    """Repository files named in check output, in order of first mention (paths may be
    absolute or relative to another directory: matched by their tail)."""
    found = []
    for m in _PATHS.finditer(output):
        named = m.group(1)
        hit = next((p for p in files if p == named or named.endswith("/" + p)), None)
        if hit is None:
            hit = next((p for p in files if p.endswith("/" + named)), None)
        if hit:
            found.append(hit)
    return list(dict.fromkeys(found))


def relevant_files(files: dict[str, str], output: str, limit: int = PROMPT_CHARS) -> list[str]:
    """The files a fix most likely needs, most relevant first, whole files within `limit`
    characters: named in the output, then what those import, then Python files whose
    module name the output mentions, then the rest of the small Python files."""
    named = mentioned_files(output, files)
    deeper = [f for path in named for f in imported_files(path, files)]
    words = set(re.findall(r"[A-Za-z_]\w+", output))
    by_name = [p for p in files if p.endswith(".py") and Path(p).stem in words]
    rest = sorted((p for p in files if p.endswith(".py")), key=lambda p: len(files[p]))
    chosen: list[str] = []
    used = 0
    for path in dict.fromkeys([*named, *deeper, *by_name, *rest]):
        size = len(files[path]) + len(path) + 20
        if used + size <= limit:
            chosen.append(path)
            used += size
    return chosen
