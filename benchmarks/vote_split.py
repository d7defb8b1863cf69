"""Vote splits: how often one question's votes are scattered over answers that are really one
answer, or go to a prose sentence, before and after the shared extractor (issue 11, item 3).

Two modes:

- `--make-corpus`: the bundled SmolLM2 (embedded engine, `self-consistency:n=8`, 256
  tokens a sample) answers seeded questions of five families (reasoning-gym products at its
  default size and with one-digit factors, basic_arithmetic, gcd, and gsm8k) and every
  sample's text is written to tests/fixtures/samples.jsonl, one question a line
  (resumable: questions already in the file are skipped).
- default: re-extract every sample of that corpus with the rule on main before this change
  (tests/fixtures/extract_before.py.txt, a frozen copy) and with `ponder.extract`, and print
  per family and format (`auto`, what `ponder think` uses, and `number`, what the bench
  uses for these families):

  - split votes: votes outside the most common written form of their value, where a
    value groups *different* extracted answers of one question that math-verify (an oracle
    independent of both rules) finds equal ("38" and "correct, and it's 38"),
  - prose answers: extracted answers of more than SHORT_WORDS (3) words (runs of letters),
  - splits: split votes plus prose answers (votes that did not count for what they said),
    and split questions: questions with any,
  - no answer: samples that give no vote at all (the cost of refusing prose),
  - vote right: questions whose majority vote (`ponder.vote.tally`) the dataset's own
    grader passes.

    PONDER_THREADS=1 python benchmarks/vote_split.py --make-corpus --size 25 --concurrency 8
    python benchmarks/vote_split.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "samples.jsonl"
BEFORE = ROOT / "tests" / "fixtures" / "extract_before.py.txt"
# family -> (dataset, dataset config); one-digit products are where the model is often right
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "reasoning-gym:products": ("reasoning-gym:products", {}),
    "reasoning-gym:products:1-digit": ("reasoning-gym:products", {"min_digits": 1, "max_digits": 1}),
    "reasoning-gym:basic_arithmetic": ("reasoning-gym:basic_arithmetic", {}),
    "reasoning-gym:gcd": ("reasoning-gym:gcd", {}),
    "gsm8k": ("gsm8k", {}),
}
STRATEGY = "self-consistency:n=8"
Extractor = Callable[[str, str], "str | None"]


def load_before(path: Path = BEFORE) -> Extractor:
    """`extract_answer` as it was on main before this change, from its frozen copy."""
    module = types.ModuleType("extract_before")
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    extract: Extractor = module.extract_answer
    return extract


def read_corpus(path: Path = CORPUS) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------- the corpus


async def make_corpus(args: argparse.Namespace) -> None:
    from ponder import athink
    from ponder.datasets import get_dataset
    from ponder.engines.llamacpp import LlamaCppEngine
    from ponder.store import NodeRecord

    done = {row["id"] for row in read_corpus(args.corpus)}
    engine = LlamaCppEngine(max_batch=32)
    gate = asyncio.Semaphore(args.concurrency)
    options: dict[str, Any] = {"seed": args.seed, "max_tokens": args.max_tokens}
    args.corpus.parent.mkdir(parents=True, exist_ok=True)
    with args.corpus.open("a", encoding="utf-8") as out:

        async def one(family: str, problem: Any) -> None:
            samples: list[str] = []

            def keep(node: NodeRecord) -> None:
                if node.kind == "sample":
                    samples.append(node.text)

            async with gate:
                await athink(problem, strategy=STRATEGY, engine=engine, on_node=keep, store=False, **options)
            row = {
                "id": problem.id,
                "task": family,
                "dataset": FAMILIES[family][0],
                "config": FAMILIES[family][1],
                "size": args.size,
                "seed": args.seed,
                "format": problem.format,
                "question": problem.question,
                "gold": problem.gold,
                "samples": samples,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            print(f"{family} {problem.id}: {len(row['samples'])} samples", flush=True)

        loaded = [
            [(family, p) for p in get_dataset(*FAMILIES[family]).load(args.size, args.seed)]
            for family in args.families
        ]
        # families interleaved, so that a run stopped early still covers all of them
        order = [pair for row in zip(*loaded, strict=True) for pair in row]
        await asyncio.gather(*(one(family, p) for family, p in order if p.id not in done))
    await engine.aclose()


# ----------------------------------------------------------------------------- measuring


@dataclass
class Count:
    questions: int = 0
    split_questions: int = 0  # questions with a split vote or a prose answer
    split_votes: int = 0  # votes outside the most common written form of their value
    prose: int = 0  # answers that are prose
    none: int = 0  # samples with no answer at all (they do not vote)
    correct: int = 0  # questions whose vote winner the dataset grades correct

    @property
    def splits(self) -> int:
        """Split votes plus prose answers: every vote that did not count for what it said."""
        return self.split_votes + self.prose

    def add(self, other: Count) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def is_prose(answer: str | None) -> bool:
    """More words (runs of letters) than a short answer has (ponder.extract.SHORT_WORDS)."""
    from ponder.extract import SHORT_WORDS

    return answer is not None and len(re.findall(r"[^\W\d_]+", answer)) > SHORT_WORDS


def same_value(a: str, b: str, cache: dict[tuple[str, str], bool]) -> bool:
    """math-verify equivalence (the oracle) of two extracted answers, each parsed as written
    (it reads the value out of "correct, and it's 38" too), cached: answers repeat a lot."""
    from math_verify import parse, verify

    key = (a, b) if a <= b else (b, a)
    if key not in cache:
        pa, pb = parse(key[0]), parse(key[1])
        cache[key] = bool(pa and pb and verify(pa, pb))
    return cache[key]


def splits(answers: Iterable[str | None], cache: dict[tuple[str, str], bool]) -> int:
    """Votes lost to splitting: answers grouped into values (math-verify equivalence); in each
    value every vote outside its most common written form is a split vote."""
    counts: dict[str, int] = {}
    for a in answers:
        if a:
            counts[a] = counts.get(a, 0) + 1
    values: list[list[str]] = []
    for a in counts:
        for value in values:
            if same_value(value[0], a, cache):
                value.append(a)
                break
        else:
            values.append([a])
    return sum(sum(counts[a] for a in v) - max(counts[a] for a in v) for v in values)


def measure(
    rows: list[dict[str, Any]], extract: Extractor, fmt: str | None, cache: dict[tuple[str, str], bool]
) -> dict[str, Count]:
    """Counts per family (and "all") with `extract` in format `fmt` (None: the row's own)."""
    from ponder.vote import tally

    problems: dict[tuple[str, int, int], dict[str, Any]] = {}
    by_family: dict[str, Count] = {}
    for row in rows:
        answers = [extract(text, fmt or row["format"]) for text in row["samples"]]
        lost = splits(answers, cache)
        winner = tally(answers).winner
        prose = sum(map(is_prose, answers))
        count = Count(
            questions=1,
            split_questions=int(lost + prose > 0),
            split_votes=lost,
            prose=prose,
            none=answers.count(None),
            correct=int(winner is not None and grade(row, winner, problems)),
        )
        by_family.setdefault(row["task"], Count()).add(count)
        by_family.setdefault("all", Count()).add(count)
    return by_family


def grade(row: dict[str, Any], answer: str, problems: dict[tuple[str, int, int], dict[str, Any]]) -> bool:
    """The dataset's own grader on the vote's winner (no response text: only the vote counts);
    the problem is made again from the row's dataset, size and seed."""
    from ponder.datasets import get_dataset
    from ponder.datasets import grade as dataset_grade

    key = (row["task"], row["size"], row["seed"])
    if key not in problems:
        dataset = get_dataset(row["dataset"], row["config"])
        problems[key] = {str(p.id): p for p in dataset.load(row["size"], row["seed"])}
    return dataset_grade(problems[key][row["id"]], answer)


def report(rows: list[dict[str, Any]]) -> list[tuple[str, str, Count, Count]]:
    """(format, family, before, after) for `auto` and for each question's own format."""
    from ponder.extract import extract_answer

    before = load_before()
    cache: dict[tuple[str, str], bool] = {}
    table = []
    for fmt in ("auto", None):
        old, new = measure(rows, before, fmt, cache), measure(rows, extract_answer, fmt, cache)
        table += [(fmt or "dataset", f, old[f], new[f]) for f in [*FAMILIES, "all"] if f in new]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--make-corpus", action="store_true", help="run the model and write the corpus")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--size", type=int, default=25, help="questions per family")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--families", type=lambda t: t.split(","), default=list(FAMILIES), help="comma-separated; default all"
    )
    args = parser.parse_args()
    if unknown := set(args.families) - set(FAMILIES):
        parser.error(f"unknown families {sorted(unknown)}: choose from {', '.join(FAMILIES)}")
    if args.make_corpus:
        asyncio.run(make_corpus(args))
        return
    rows = read_corpus(args.corpus)
    samples = sum(len(r["samples"]) for r in rows)
    print(f"{len(rows)} questions, {samples} samples from {args.corpus}")
    print(
        f"{'format':8} {'family':31} {'splits':>9} {'split q':>9} {'split votes':>11} {'prose':>9} "
        f"{'no answer':>9} {'vote right':>10}   (before -> after)"
    )
    for fmt, family, old, new in report(rows):

        def pair(o: int, n: int, width: int) -> str:
            return f"{f'{o} -> {n}':>{width}}"

        print(
            f"{fmt:8} {family:31} {pair(old.splits, new.splits, 9)} "
            f"{pair(old.split_questions, new.split_questions, 9)} "
            f"{pair(old.split_votes, new.split_votes, 11)} {pair(old.prose, new.prose, 9)} "
            f"{pair(old.none, new.none, 9)} {pair(old.correct, new.correct, 10)} of {new.questions}"
        )


if __name__ == "__main__":
    main()
