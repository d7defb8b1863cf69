"""Replies a small model writes (code blocks, not diffs) read as patches: the whole file, a
function, a method, a decorated function; and what is no patch. The oracle for each is the
file written out by hand; the loop test runs the real checks in the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakes import ScriptedEngine
from ponder.code.fix import afix, fix_request
from ponder.code.patch import PatchError, apply_patch
from ponder.code.reply import Block, extract_diff, fenced_blocks, reply_patch
from ponder.store import TraceStore
from test_fix import fixture, materialize

SHAPES = '''"""Shapes."""

import math

RATE = 2


@cache
def area(r):
    return math.pi * r


class Box:
    """A box."""

    def __init__(self, w):
        self.w = w

    @property
    def width(self):
        return self.w + 1

    def double(self):
        return 2 * self.w
'''
FILES = {
    "pkg/shapes.py": SHAPES,
    "pkg/util.py": "def clamp(x):\n    return max(0, x)\n",
    "tests/test_shapes.py": "from pkg.shapes import area\n\n\ndef test_area():\n    assert area(1) > 3\n",
}
SHOWN = ["tests/test_shapes.py", "pkg/shapes.py", "pkg/util.py"]


def python(code: str, before: str = "Here is the fix:") -> str:
    return f"{before}\n```python\n{code}```\nThis fixes it.\n"


def patched(reply: str, files: dict[str, str] = FILES, shown: list[str] = SHOWN) -> dict[str, str]:
    """The repository after the reply's patch, through the same diff path as `ponder fix`."""
    return apply_patch(files, reply_patch(reply, files, shown).diff)


def test_one_function_replaces_its_definition_and_nothing_else() -> None:
    """util.py defines only clamp, so the block is its whole text; its usage example and
    the import of the file itself are about the file, not in it."""
    fixed = "def clamp(x):\n    return min(max(0, x), 10)\n"
    for code in (fixed, f"from pkg.util import clamp\n\n{fixed}\nprint(clamp(3))\nassert clamp(-1) == 0\n"):
        after = patched(python(code))
        assert after["pkg/util.py"] == fixed
        assert {p: t for p, t in after.items() if p != "pkg/util.py"} == {
            p: t for p, t in FILES.items() if p != "pkg/util.py"
        }


def test_a_decorated_function_replaces_the_decorators_too() -> None:
    after = patched(python("@lru_cache(maxsize=8)\ndef area(r):\n    return math.pi * r * r\n"))
    want = SHAPES.replace(
        "@cache\ndef area(r):\n    return math.pi * r\n",
        "@lru_cache(maxsize=8)\ndef area(r):\n    return math.pi * r * r\n",
    )
    assert after["pkg/shapes.py"] == want


def test_a_method_alone_or_inside_its_class_replaces_only_that_method() -> None:
    fixed = SHAPES.replace("return self.w + 1", "return self.w")
    alone = "@property\ndef width(self):\n    return self.w\n"
    in_class = "class Box:\n    @property\n    def width(self):\n        return self.w\n"
    indented = "    @property\n    def width(self):\n        return self.w\n"
    for code in (alone, in_class, indented):
        assert patched(python(code))["pkg/shapes.py"] == fixed, code


def test_a_whole_file_named_by_a_comment_or_the_line_before_replaces_it() -> None:
    new = "def clamp(x):\n    return x if x > 0 else 0\n\n\ndef half(x):\n    return x / 2\n"
    for reply in (python("# file: pkg/util.py\n" + new), python(new, before="`pkg/util.py`:")):
        assert patched(reply)["pkg/util.py"] == new.replace("# file: pkg/util.py\n", "")
    named = "```python title=pkg/util.py\n" + new + "```\n"
    assert patched(named)["pkg/util.py"] == new


def test_a_whole_file_with_the_same_definitions_replaces_that_file_imports_included() -> None:
    """The fix a linter wants (an unused import gone) is a whole file without it."""
    files = {
        "util.py": "import os\n\n\ndef double(x):\n    return 2 * x\n",
        "test_util.py": "def test_x():\n    pass\n",
    }
    after = patched(python("def double(x):\n    return 2 * x\n"), files, ["test_util.py", "util.py"])
    assert after["util.py"] == "def double(x):\n    return 2 * x\n"


def test_imports_a_replaced_function_needs_are_added_after_the_files_imports() -> None:
    files = {"m.py": "def a():\n    return 1\n\n\ndef b():\n    return 2\n"}
    after = patched(python("import os\nfrom m import b\n\ndef a():\n    return os.sep\n"), files, ["m.py"])
    assert after["m.py"] == "import os\n\n\ndef a():\n    return os.sep\n\n\ndef b():\n    return 2\n"
    after = patched(python("import math\nimport sys\nimport json\n\ndef area(r):\n    return sys.maxsize\n"))
    assert after["pkg/shapes.py"].startswith('"""Shapes."""\n\nimport math\nimport sys\n\nRATE = 2\n')
    assert "@cache\ndef area(r):\n    return sys.maxsize\n\n\nclass Box:" in after["pkg/shapes.py"]


def test_the_first_block_that_changes_something_is_the_patch() -> None:
    echo = python(FILES["pkg/util.py"])
    fix = python("def clamp(x):\n    return abs(x)\n")
    assert patched(echo + fix)["pkg/util.py"] == "def clamp(x):\n    return abs(x)\n"


@pytest.mark.parametrize(
    ("reply", "says"),
    [
        (python("def nowhere(x):\n    return x\n"), "nowhere, which no file shown"),
        (python("def clamp(x):\n    return max(0, x\n"), "does not parse"),
        (python(FILES["pkg/util.py"]), "changes nothing"),
        (python("print(clamp(3))\n"), "defines no function or class"),
        ("The bug is in clamp.", "no unified diff and no ```python block"),
        ('```json\n{"a": 1}\n```\n', "not Python"),
        (python("def __init__(self):\n    pass\n", before="Fixed:"), "Box.__init__"),
    ],
)
def test_a_block_that_is_no_usable_patch_says_why(reply: str, says: str) -> None:
    files = {**FILES, "pkg/other.py": "class Other:\n    def __init__(self):\n        pass\n"}
    shown = [*SHOWN, "pkg/other.py"]
    if says == "Box.__init__":
        says = "__init__ is defined more than once"
    with pytest.raises(PatchError, match=says.replace("(", r"\(")):
        reply_patch(reply, files, shown)


def test_a_diff_that_applies_wins_over_code_and_blocks_keep_their_info_and_preceding_line() -> None:
    diff = "--- a/pkg/util.py\n+++ b/pkg/util.py\n@@ -1,2 +1,2 @@\n def clamp(x):\n"
    diff += "-    return max(0, x)\n+    return x\n"
    reply = python("def clamp(x):\n    return 0\n") + f"```diff\n{diff}```\n"
    assert reply_patch(reply, FILES, SHOWN).how == "a unified diff"
    assert extract_diff(reply) == diff
    bad = diff.replace("max(0, x)", "min(0, x)")
    reply = f"```diff\n{bad}```\n" + python("def clamp(x):\n    return 0\n")
    assert reply_patch(reply, FILES, SHOWN).how == "block 2: the whole of pkg/util.py"
    with pytest.raises(PatchError, match=r"the unified diff: hunk 1 of pkg/util\.py does not match"):
        reply_patch(f"```diff\n{bad}```\n", FILES, SHOWN)
    blocks = fenced_blocks("Intro\n\n### a.py\n```python a.py\nx = 1\n```\n```\nunterminated\n")
    assert blocks == [Block("python a.py", "x = 1\n", "### a.py"), Block("", "unterminated\n", "```")]


def test_a_blocks_edits_to_test_files_are_refused_and_left_out() -> None:
    cheat = python("def test_area():\n    assert True\n")
    with pytest.raises(PatchError, match=r"block 1 edits tests only \(tests/test_shapes.py; the whole of"):
        reply_patch(cheat, FILES, SHOWN)
    fix = python("def clamp(x):\n    return abs(x)\n")
    assert patched(cheat + fix)["tests/test_shapes.py"] == FILES["tests/test_shapes.py"]
    assert patched(cheat + fix)["pkg/util.py"] == "def clamp(x):\n    return abs(x)\n"
    both = python("def clamp(x):\n    return abs(x)\n\n\ndef test_area():\n    assert True\n")
    read = reply_patch(both, FILES, SHOWN)
    assert read.how.endswith("(its edits to tests/test_shapes.py left out)")
    assert apply_patch(FILES, read.diff) == {**FILES, "pkg/util.py": "def clamp(x):\n    return abs(x)\n"}
    after = apply_patch(FILES, reply_patch(cheat, FILES, SHOWN, protect_tests=False).diff)
    assert (
        after["tests/test_shapes.py"] == "def test_area():\n    assert True\n"
    )  # its definitions are the file's


# ---------------------------------------------------------------- through the loop


async def test_a_code_block_reply_is_fixed_through_the_same_loop_and_a_test_edit_refused(
    tmp_path: Path,
) -> None:
    root = materialize("failing-test", tmp_path)
    cheat = "```python\nfrom calc import add\n\n\ndef test_add():\n    assert add(2, 3) == -1\n```\n"
    echo = "```python\ndef add(a, b):\n    return a - b\n```\n"
    fix = "The fix:\n```python\ndef add(a, b):\n    return a + b\n```\n\n```python\nprint(add(2, 3))\n```\n"
    engine = ScriptedEngine([cheat, echo, fix])
    store = TraceStore(tmp_path / "traces.sqlite")
    report = await afix(root, ["pytest -q", "ruff check ."], engine=engine, max_attempts=4, store=store)
    assert "block 1 edits tests only (test_calc.py" in str(report.attempts[0].error)
    assert "changes nothing" in str(report.attempts[1].error)
    assert report.attempts[2].adopted and report.attempts[2].how == "block 1: the whole of calc.py"
    assert report.fixed == ["pytest -q"] and not report.still_failing
    assert report.patch == str(fixture("failing-test")["patch"])
    assert "a - b" in (root / "calc.py").read_text()  # the original is untouched
    asks = [c.messages[-1]["content"] for c in engine.calls if c.messages]
    assert "edits tests" in asks[1] and "changes nothing" in asks[2]
    trace = store.get_trace(report.trace_id)
    assert trace is not None
    texts = [n.text for n in trace.nodes if n.kind == "verdict"]
    assert any("patch not applied" in t and "edits tests" in t for t in texts)
    assert any("the whole of calc.py" in t and "[pass]" in t for t in texts)


def test_the_code_prompt_asks_for_a_python_block_and_a_raw_prompt_gets_its_fence_as_prefill() -> None:
    files = fixture("failing-test")["files"]
    assert isinstance(files, dict)
    chat = fix_request(files, [], None, chat=True, max_tokens=10)
    assert chat.messages is not None and "```python" in chat.messages[0]["content"]
    raw = fix_request(files, [], None, chat=False, max_tokens=10)
    assert raw.prefill == "```python\n" and raw.stop == ("\n```",)
    assert fix_request(files, [], None, chat=False, ask="diff", max_tokens=10).prefill == "```diff\n"


@pytest.mark.model
async def test_the_bundled_models_code_replies_are_read_as_patches(tmp_path: Path) -> None:
    """The bundled model's greedy reply on two one-file defects is a Python block, read as the
    whole file and checked; the 135M model fixes at least one (docs/results/fix/)."""
    from ponder.think import default_engine

    fixed = []
    for name in ("missing-return", "type-error"):
        checks = fixture(name)["checks"]
        assert isinstance(checks, list)
        root = materialize(name, tmp_path)
        report = await afix(root, checks, engine=default_engine(), max_attempts=1, max_tokens=256)
        (attempt,) = report.attempts
        assert attempt.error is None and str(attempt.how).startswith("block "), attempt
        assert len(attempt.runs) == len(checks)
        fixed += [name] if not report.still_failing else []
    assert fixed
