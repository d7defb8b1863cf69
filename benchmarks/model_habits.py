"""What the bundled model does with a vote (issue 5's note), on 20 seeded questions per task:

- how often a sample writes the requested "Answer:" line (the extractor must not rely on it),
- how often self-consistency's winner is wrong *and* a number copied from the question (a
  vote amplifies that error instead of averaging it out).

    python benchmarks/model_habits.py
"""

from __future__ import annotations

import asyncio
import re

from early_stop import grade, load_items, think_collecting  # the same seeded questions and scorer

from ponder.engines.llamacpp import LlamaCppEngine

TASKS = [("products", {"min_digits": 1, "max_digits": 1}), ("gcd", {}), ("simple_equations", {})]
SC = "self-consistency:n=8"


async def main() -> None:
    engine = LlamaCppEngine(max_batch=32)
    for task, config in TASKS:
        right = {"direct": 0, SC: 0}
        formatted = samples = copied = 0
        for item in load_items(task, 20, 5, config):
            in_question = set(re.findall(r"-?\d+", item.problem.question))
            for spec in right:
                answer, nodes = await think_collecting(item.problem, spec, engine, max_tokens=96, seed=5)
                ok = grade(item, answer.answer)
                right[spec] += ok
                if spec == SC:
                    texts = [n.text for n in nodes if n.kind == "sample"]
                    samples += len(texts)
                    formatted += sum(bool(re.search(r"answer\s*:", t, re.I)) for t in texts)
                    copied += answer.answer in in_question and not ok
        print(
            f"{task}: direct {right['direct']}/20, {SC} {right[SC]}/20, samples writing 'Answer:' "
            f"{formatted}/{samples}, vote winner wrong and copied from the question {copied}/20",
            flush=True,
        )
    await engine.aclose()


if __name__ == "__main__":
    asyncio.run(main())
