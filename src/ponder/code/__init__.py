"""Code that actually runs.

- `visible`: the checks a code problem shows (its docstring's examples as tests, ruff's
  can-it-run rules), kept apart from the hidden tests that grade it.
- `selftest`: tests the model writes for itself (CodeT's dual execution agreement).
- `fix`: `ponder fix`: checks a repository, asks for a patch, applies it to a sandboxed copy,
  reruns every check, iterates.
"""

from ponder.code.visible import docstring_examples, visible_checks, visible_tests

__all__ = ["docstring_examples", "visible_checks", "visible_tests"]
