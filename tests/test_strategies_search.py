"""Step-level search (beam-search, mcts, particle-filter): control flow on a scripted engine,
then the real bundled model answering within budgets and leaving trees of the right shape."""

from __future__ import annotations

import pathlib
import random
import re
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from fakes import ScriptedEngine, collect
from ponder import Budget, athink
from ponder.engines.base import Completion, Engine, GenerationRequest, TokenLogprob
from ponder.problem import Problem
from ponder.store import NodeRecord, TraceStore
from ponder.strategies import Strategy, parse_strategy
from ponder.strategies.beam_search import BeamSearch
from ponder.strategies.mcts import MCTS, Node, _Search
from ponder.strategies.particle_filter import ParticleFilter
from ponder.strategies.steps import Path, Steps
from ponder.think import Answer
from ponder.verifiers.base import Verdict


class QualityVerifier:
    """Scores a partial solution by the `qN` tag in its last step: q9 -> 0.9."""

    name = "quality"

    async def verify(self, problem: Problem, candidate: str) -> Verdict:
        tags = re.findall(r"q(\d)", candidate.strip().split("\n\n")[-1])
        return Verdict(int(tags[-1]) / 10 if tags else 0.0, False)


def is_step(req: GenerationRequest) -> bool:
    return "\n\n" in req.stop


def depth_of(req: GenerationRequest) -> int:
    return req.prefill.count("\n\n") + 1


def steps_by_depth(nodes: list[NodeRecord]) -> dict[int, list[NodeRecord]]:
    out: dict[int, list[NodeRecord]] = {}
    for n in nodes:
        if n.kind == "step":
            out.setdefault(n.meta["depth"], []).append(n)
    return out


async def think_stored(
    engine: Engine, strategy: Strategy, tmp_path: pathlib.Path
) -> tuple[Answer, list[NodeRecord]]:
    """Think on "q?" with steps scored by QualityVerifier; the answer and its stored trace."""
    store = TraceStore(tmp_path / "t.sqlite")
    answer = await athink("q?", strategy=strategy, engine=engine, verifier=QualityVerifier(), store=store)
    record = store.get_trace(answer.trace_id)
    assert record is not None
    return answer, record.nodes


# ---- steps ---------------------------------------------------------------------------------


def test_steps_split_prefix_and_completion() -> None:
    blank = Steps()
    assert blank.split("a\n\nb\n \nc") == ["a", "b", "c"]
    path = Path(steps=("a", "b"))
    assert blank.prefix(path) == "a\n\nb\n\n" and blank.stop == "\n\n"
    numbered = Steps("step")
    assert numbered.split("Step 1: x\nStep 2: y") == ["Step 1: x", "Step 2: y"]
    assert numbered.prefix(Path(steps=("Step 1: x",))) == "Step 1: x\n" and numbered.stop == "\nStep "
    assert Steps("line").split("a\nb") == ["a", "b"]
    # an answer line finishes a path; an empty next step (the model ends at once) does too
    done = blank.extend(path, Completion("so Answer: 3", "stop", 1, 3))
    assert done.complete and done.steps[-1] == "so Answer: 3"
    ended = blank.extend(path, Completion("", "stop", 1, 0))
    assert ended.complete and ended.ended and ended.steps == path.steps
    assert not blank.extend(path, Completion("more", "length", 1, 1)).complete
    # the embedded engine reports the end-of-text token it stopped at
    eos = [TokenLogprob("so", -0.1), TokenLogprob(" 3", -0.1), TokenLogprob("<|im_end|>", -0.1)]
    assert blank.extend(path, Completion("so 3", "stop", 1, 3, logprobs=eos)).complete
    delimiter = [TokenLogprob("so", -0.1), TokenLogprob(" 3", -0.1), TokenLogprob(".\n\n", -0.1)]
    assert not blank.extend(path, Completion("so 3.", "stop", 1, 3, logprobs=delimiter)).complete


async def test_default_scorer_is_a_process_reward_read_from_yes_no_logprobs() -> None:
    def script(req: GenerationRequest, i: int) -> str:
        if not is_step(req):  # the "is the last step correct?" question
            solution = req.messages[-1]["content"].split("Answer:\n")[1].rsplit("\n\n", 1)[0]
            return "Yes" if "good" in solution.split("\n\n")[-1] else "No"
        return ["bad 1", "good 2"][i % 2] + (" Answer: 2" if depth_of(req) == 2 else "")

    engine = ScriptedEngine(script)
    answer = await athink(
        "q?", strategy="beam-search:width=1,expand=2,max_steps=3", engine=engine, store=False
    )
    assert answer.answer == "2" and "bad" not in answer.response
    prm = [r for b in engine.batches for r in b if not is_step(r)]
    assert prm and all(r.max_tokens <= 3 and r.logprobs and r.top_logprobs for r in prm)


async def test_a_model_that_ends_without_an_answer_line_finishes_at_an_empty_next_step() -> None:
    def script(req: GenerationRequest, i: int) -> str:
        if not is_step(req):
            return "Yes"
        return f"so it is 1{i} q5" if depth_of(req) == 1 else ""  # then end of text at once

    nodes: list[NodeRecord] = []
    answer = await athink(
        "q?",
        strategy=BeamSearch(width=2, expand=2),
        engine=ScriptedEngine(script),
        store=False,
        on_node=collect(nodes),
    )
    ends = [n for n in nodes if n.kind == "step" and n.meta["end"]]
    assert ends and all(n.meta["depth"] == 2 and n.meta["complete"] and n.text == "" for n in ends)
    assert answer.answer in ("10", "11") and answer.stopped_by is None
    assert max(n.meta["depth"] for n in nodes if n.kind == "step") == 2  # stopped once complete


# ---- beam search ---------------------------------------------------------------------------


def beam_script(req: GenerationRequest, i: int) -> str:
    depth = depth_of(req)
    text = f"d{depth} n{i} q{(i * 7) % 10}"
    return text + " Answer: 42" if depth == 3 else text


async def test_beam_search_keeps_width_beams_per_level_in_one_call_per_depth(tmp_path: pathlib.Path) -> None:
    engine = ScriptedEngine(beam_script)
    answer, trace = await think_stored(engine, BeamSearch(width=2, expand=3, max_steps=5), tmp_path)
    levels = steps_by_depth(trace)
    assert sorted(levels) == [1, 2, 3]  # depth 3 answers, so the search ends there
    assert len(levels[1]) == 3 and len(levels[2]) == len(levels[3]) == 2 * 3
    for depth, nodes in levels.items():
        kept = [n for n in nodes if n.meta["kept"]]
        assert len(kept) == 2  # levels x width
        # the kept ones are the best-scored of their level
        assert min(n.score for n in kept) >= max(n.score for n in nodes if not n.meta["kept"])
        if depth > 1:
            parents = {n.id for n in levels[depth - 1] if n.meta["kept"]}
            assert {n.parent_id for n in nodes} == parents
            assert all(c == 3 for c in Counter(n.parent_id for n in nodes).values())  # expand each
    step_batches = [b for b in engine.batches if any(is_step(r) for r in b)]
    assert [len(b) for b in step_batches] == [1, 2, 2] and all(r.n == 3 for b in step_batches for r in b)
    assert all(r.prefill.endswith("\n\n") for b in step_batches[1:] for r in b)
    assert answer.answer == "42" and answer.stopped_by is None
    best = max((n for n in levels[3] if n.meta["kept"]), key=lambda n: n.score)
    assert answer.score == pytest.approx(best.score) and best.meta["complete"]
    assert next(n for n in trace if n.kind == "answer").parent_id == best.id


@pytest.mark.parametrize(
    ("budget", "limit"), [("5 samples", "samples"), (Budget(tokens=14), "tokens"), ("0.3s", "seconds")]
)
async def test_beam_search_respects_budgets_and_returns_best_so_far(budget: Budget | str, limit: str) -> None:
    def slow(req: GenerationRequest, i: int) -> str:
        time.sleep(0.04)
        return f"d{depth_of(req)} q{(i * 7) % 10} so 1{i}"  # never finishes on its own

    answer = await athink(
        "q?",
        strategy=BeamSearch(width=2, expand=3, max_steps=50),
        budget=budget,
        engine=ScriptedEngine(slow),
        verifier=QualityVerifier(),
        store=False,
    )
    assert answer.stopped_by == limit
    assert answer.answer is not None and answer.answer.startswith("1")  # a partial path's answer
    if limit == "samples":
        assert answer.usage.completion_tokens <= 5 * 5


# ---- mcts ----------------------------------------------------------------------------------


def mcts_script(req: GenerationRequest, i: int) -> str:
    if not is_step(req):  # a rollout to the end
        return "so q9 Answer: 42" if "good" in req.prefill else "so q1 Answer: 41"
    kind = "good q8" if i % 3 == 0 else "bad q2"
    return f"d{depth_of(req)} n{i} {kind}"


def check_visits(note: NodeRecord, iterations: int) -> None:
    """Visits add up: root = iterations; a node = its leaf visits + its children's visits."""
    tree, root = note.meta["tree"], note.meta["root"]
    assert note.meta["iterations"] == iterations and root["visits"] == iterations
    children: dict[str | None, list[dict]] = {}
    for stats in tree.values():
        children.setdefault(stats["parent"], []).append(stats)
    assert root["visits"] == root["leaf_visits"] + sum(c["visits"] for c in children[None])
    for node_id, stats in tree.items():
        below = sum(c["visits"] for c in children.get(node_id, []))
        assert stats["visits"] == stats["leaf_visits"] + below
        assert stats["visits"] == 0 or 0.0 <= stats["value"] / stats["visits"] <= 1.0


@pytest.mark.parametrize("value", ["score", "rollout", "agreement"])
async def test_mcts_visit_counts_add_up(value: str, tmp_path: pathlib.Path) -> None:
    strategy = MCTS(iterations=12, expand=3, max_steps=4, c=0.5, value=value)  # type: ignore[arg-type]
    answer, trace = await think_stored(ScriptedEngine(mcts_script), strategy, tmp_path)
    (note,) = [n for n in trace if n.kind == "note"]
    check_visits(note, 12)
    steps = {n.id: n for n in trace if n.kind == "step"}
    assert set(note.meta["tree"]) == set(steps)
    # a step node's trace parent is its tree parent (or the root node)
    for node_id, stats in note.meta["tree"].items():
        assert steps[node_id].parent_id == (stats["parent"] or trace[0].id)
    # the well-scored first step is explored more than either bad one
    visits = {k: v["visits"] for k, v in note.meta["tree"].items()}
    first = [n for n in steps.values() if n.meta["depth"] == 1]
    assert [n.text.split()[-2] for n in first] == ["good", "bad", "bad"]
    if value != "agreement":  # agreement values the answer the rollouts share, not the step
        assert visits[first[0].id] > max(visits[first[1].id], visits[first[2].id])
    rollouts = [n for n in trace if n.kind == "sample"]
    if value == "score":
        assert not rollouts  # no solution finished: the most visited path's partial answer
        assert answer.response.startswith("d1") and "good" in answer.response.split("\n\n")[0]
    else:
        assert all(n.meta["rollout"] and n.parent_id in steps for n in rollouts)
        assert len(rollouts) <= 12 and answer.answer == "42"
    assert answer.stopped_by is None


async def test_mcts_agreement_values_follow_later_rollouts() -> None:
    """A finished leaf's agreement value is re-read on each visit: it was 1/1 when it was the
    only rollout and is 1/3 once two later rollouts disagree with it."""
    search = _Search(MCTS(value="agreement"), Problem("q?"), None)  # type: ignore[arg-type]
    leaf = Node(Path(("Answer: 42",), complete=True))
    assert await search.evaluate(leaf, seed=0) == 1.0
    search.answers += ["41", "41"]
    assert await search.evaluate(leaf, seed=0) == pytest.approx(1 / 3)
    assert await search.evaluate(Node(Path(("Answer: 41",), complete=True)), seed=0) == pytest.approx(3 / 4)


async def test_mcts_stops_at_the_deadline_with_best_so_far() -> None:
    def slow(req: GenerationRequest, i: int) -> str:
        time.sleep(0.03)
        return mcts_script(req, i)

    started = time.monotonic()
    answer = await athink(
        "q?",
        strategy=MCTS(iterations=10_000, expand=2),
        budget="0.5s",
        engine=ScriptedEngine(slow),
        verifier=QualityVerifier(),
        store=False,
    )
    assert time.monotonic() - started < 1.5
    assert answer.stopped_by == "seconds" and answer.answer in ("42", "41")


async def test_mcts_respects_samples_and_tokens() -> None:
    engine = ScriptedEngine(mcts_script)
    answer = await athink(
        "q?",
        strategy=MCTS(iterations=100, expand=3),
        budget="10 samples",
        engine=engine,
        verifier=QualityVerifier(),
        store=False,
    )
    assert answer.stopped_by == "samples" and sum(r.n for r in engine.calls) == 10
    answer = await athink(
        "q?",
        strategy=MCTS(iterations=100, expand=3),
        budget=Budget(tokens=30),
        engine=ScriptedEngine(mcts_script),
        verifier=QualityVerifier(),
        store=False,
    )
    assert answer.stopped_by == "tokens" and answer.answer is not None


# ---- particle filter -----------------------------------------------------------------------


def pf_script(req: GenerationRequest, i: int) -> str:
    depth = depth_of(req)
    if depth == 1:
        return ["good q9", "bad q1", "bad q1", "bad q2"][i % 4]
    return f"d{depth} n{i} q5" + (" Answer: 7" if depth == 3 else "")


async def test_particle_filter_resamples_toward_high_weight_particles(tmp_path: pathlib.Path) -> None:
    engine = ScriptedEngine(pf_script)
    strategy = ParticleFilter(particles=4, weight_temperature=0.5, max_steps=6)
    answer, trace = await think_stored(engine, strategy, tmp_path)
    levels = steps_by_depth(trace)
    good = next(n for n in levels[1] if "good" in n.text)
    assert good.meta["weight"] > 0.9
    # every copy drawn is the good particle: its 4 copies are advanced in one request with n=4
    assert all(n.parent_id == good.id for n in levels[2])
    step_batches = [[r.n for r in b] for b in engine.batches if any(is_step(r) for r in b)]
    assert step_batches[:2] == [[4], [4]]
    resamples = [n for n in trace if n.kind == "note"]
    assert resamples[0].meta["ancestors"] == [0, 0, 0, 0]
    assert answer.answer == "7" and answer.stopped_by is None and answer.response.startswith("good")


async def test_particle_filter_systematic_resampling_and_weighted_vote() -> None:
    strategy = ParticleFilter(particles=4, weight_temperature=0.5, resample="systematic", pick="vote")
    answer = await athink(
        "q?", strategy=strategy, engine=ScriptedEngine(pf_script), verifier=QualityVerifier(), store=False
    )
    assert answer.answer == "7"
    pf = ParticleFilter(particles=4, resample="systematic")
    assert pf.draw([0.25] * 4, random.Random(0)) == [0, 1, 2, 3]  # systematic: exact shares
    assert pf.draw([0.0, 1.0, 0.0, 0.0], random.Random(0)) == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("budget", "limit"), [("6 samples", "samples"), (Budget(tokens=20), "tokens"), ("0.3s", "seconds")]
)
async def test_particle_filter_respects_budgets(budget: Budget | str, limit: str) -> None:
    def slow(req: GenerationRequest, i: int) -> str:
        time.sleep(0.03)
        return f"d{depth_of(req)} q{(i * 3) % 10} so 1{i}"

    answer = await athink(
        "q?",
        strategy=ParticleFilter(particles=4, max_steps=50),
        budget=budget,
        engine=ScriptedEngine(slow),
        verifier=QualityVerifier(),
        store=False,
    )
    assert answer.stopped_by == limit and answer.answer is not None


def test_specs_parse() -> None:
    assert parse_strategy("beam-search:width=3,expand=2,delimiter=step") == BeamSearch(3, 2, delimiter="step")
    assert (
        parse_strategy("mcts:iterations=5,c=1.4,value=agreement").spec()
        == "mcts:iterations=5,c=1.4,value=agreement"
    )
    assert parse_strategy("particle-filter:particles=8,pick=vote") == ParticleFilter(particles=8, pick="vote")
    for bad in (
        "beam-search:scorer=vibes",
        "mcts:value=vibes",
        "particle-filter:resample=vibes",
        "mcts:expand=0",
    ):
        with pytest.raises(ValueError):
            parse_strategy(bad)


# ---- the real bundled model ----------------------------------------------------------------
# The tiny model ignores formats (rarely writes "Answer:", may never leave a blank line), so
# these check budgets, deadlines and tree shapes, never its text.

QUESTION = "What is 7 * 8?"


@pytest.fixture(scope="module")
def model() -> Iterator[Engine]:
    from ponder.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(max_batch=8, n_ctx=4096, n_threads=1)
    yield engine
    engine.close()


async def think_on(
    model: Engine, strategy: Strategy, budget: Budget | str
) -> tuple[Answer, list[NodeRecord]]:
    nodes: list[NodeRecord] = []
    answer = await athink(
        QUESTION,
        strategy=strategy,
        budget=budget,
        engine=model,
        store=False,
        on_node=collect(nodes),
        max_tokens=64,
    )
    return answer, nodes


@pytest.mark.model
async def test_beam_search_on_the_bundled_model(model: Engine) -> None:
    strategy = BeamSearch(width=2, expand=2, max_steps=2, max_step_tokens=24)  # process reward from the model
    answer, nodes = await think_on(model, strategy, Budget(tokens=400))
    assert answer.usage.completion_tokens <= 400 and answer.response
    levels = steps_by_depth(nodes)
    assert 1 <= len(levels) <= 2 and len(levels[1]) == 2  # the root expanded `expand` ways
    for depth, level in levels.items():
        kept = [n for n in level if n.meta["kept"]]
        assert 1 <= len(kept) <= 2 and all(0.0 <= n.score <= 1.0 for n in level)
        if depth > 1:
            assert {n.parent_id for n in level} <= {n.id for n in levels[depth - 1] if n.meta["kept"]}
    assert nodes[-1].kind == "answer" and nodes[-1].parent_id in {n.id for n in nodes if n.kind == "step"}


@pytest.mark.model
async def test_mcts_on_the_bundled_model(model: Engine) -> None:
    strategy = MCTS(iterations=3, expand=2, max_steps=3, max_step_tokens=24, scorer="logprob")
    answer, nodes = await think_on(model, strategy, "20 samples")
    assert answer.stopped_by is None and answer.response
    (note,) = [n for n in nodes if n.kind == "note"]
    check_visits(note, 3)
    rollouts = [n for n in nodes if n.kind == "sample"]
    assert 1 <= len(rollouts) <= 3 and all(n.meta["rollout"] for n in rollouts)


@pytest.mark.model
async def test_particle_filter_on_the_bundled_model(model: Engine) -> None:
    strategy = ParticleFilter(particles=3, max_steps=2, max_step_tokens=24)
    answer, nodes = await think_on(model, strategy, Budget(tokens=400))
    assert answer.usage.completion_tokens <= 400 and answer.response
    levels = steps_by_depth(nodes)
    resamples = [n for n in nodes if n.kind == "note"]
    assert len(levels[1]) == 3 and len(resamples) == len(levels)
    assert sum(resamples[0].meta["weights"]) == pytest.approx(1.0, abs=1e-3)
    if 2 in levels:  # unfinished particles were drawn from the first step's nodes
        drawn = {levels[1][i].id for i in resamples[0].meta["ancestors"]}
        assert {n.parent_id for n in levels[2]} <= drawn


@pytest.mark.model
@pytest.mark.parametrize(
    "strategy",
    [
        BeamSearch(width=4, expand=4, max_steps=50, max_step_tokens=64),
        MCTS(iterations=1000, expand=4, max_steps=50, max_step_tokens=64),
        ParticleFilter(particles=8, max_steps=50, max_step_tokens=64),
    ],
    ids=["beam-search", "mcts", "particle-filter"],
)
async def test_search_stops_at_a_short_deadline_with_best_so_far(model: Engine, strategy: Strategy) -> None:
    started = time.monotonic()
    answer, nodes = await think_on(model, strategy, "2s")
    assert answer.stopped_by == "seconds"
    assert time.monotonic() - started < 6.0  # the deadline holds mid-generation, with slack for a loaded CPU
    if any(n.kind == "step" and n.text for n in nodes):
        assert answer.response  # whatever was thought by then, not nothing
    assert nodes[-1].kind == "answer"
