"""The embedded engine's scheduler on a fake decoder: no model, exact expectations.

The fake writes a known reply for each prompt (see fake_decoder.py), so every sample's
text is checked against the oracle `reply(prompt, seed)`, and the fake itself asserts that
KV positions stay contiguous and never exceed the context.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fake_decoder import FakeDecoder, echo, encode
from ponder.budget import Budget, Meter
from ponder.engines.base import Completion, GenerationRequest
from ponder.engines.llamacpp import Scheduler

Prompt = tuple[GenerationRequest, list[int]]


def ask(prompt: str, **settings: Any) -> Prompt:
    return GenerationRequest(prompt=prompt, **settings), encode(prompt)


def make(fake: FakeDecoder, **kw: Any) -> Scheduler:
    return Scheduler(fake, **{"max_batch": 4, "prefix_cache": 2, **kw})


@pytest.fixture
def fake() -> FakeDecoder:
    return FakeDecoder()


@pytest.fixture
def scheduler(fake: FakeDecoder) -> Iterator[Scheduler]:
    s = make(fake)
    yield s
    s.close()


class Listener:
    """Records deltas and completions in the order the caller's loop heard them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, str]] = []

    def delta(self, r: int, i: int, text: str) -> None:
        self.events.append(("delta", r, i, text))

    def completion(self, r: int, i: int, c: Completion) -> None:
        self.events.append(("done", r, i, c.text))

    def text(self, r: int, i: int) -> str:
        return "".join(t for kind, rr, ii, t in self.events if kind == "delta" and (rr, ii) == (r, i))


async def test_samples_fork_from_one_evaluated_prompt(scheduler: Scheduler, fake: FakeDecoder) -> None:
    prompt = ask("count the legs|", n=3, temperature=0.8, seed=10, max_tokens=100)
    meter = Meter()
    [completions] = await scheduler.generate([prompt], meter)
    replies = [echo(b"count the legs", 10 + i).decode() for i in range(3)]
    assert [c.text for c in completions] == replies
    assert all(c.finish_reason == "stop" for c in completions)
    assert [c.completion_tokens for c in completions] == [len(r) + 1 for r in replies]  # + end-of-generation
    assert scheduler.stats.prompt_tokens_evaluated == len(prompt[1]) - 1  # once, not three times
    assert meter.prompt_tokens == len(prompt[1])
    assert meter.completion_tokens == sum(c.completion_tokens for c in completions)
    assert fake.live_samplers == 0
    assert len(fake.sequences_in_use()) == 1  # only the prompt, kept as a cached prefix


async def test_samples_wait_for_kv_room() -> None:
    fake = FakeDecoder(n_ctx=64)
    scheduler = make(fake, prefix_cache=0)
    try:
        prompt = ask("abcdefgh|", n=4, temperature=0.5, seed=1, max_tokens=20)
        [completions] = await scheduler.generate([prompt])
    finally:
        scheduler.close()
    assert [c.text for c in completions] == [echo(b"abcdefgh", 1 + i).decode() for i in range(4)]
    # 8 prompt cells + 21 promised per sample: two fit in 64 cells, the others waited
    assert fake.most_logits == 2
    assert fake.most_cells <= 64


async def test_more_requests_than_batch_slots(fake: FakeDecoder) -> None:
    scheduler = make(fake, max_batch=2)
    try:
        prompts = [ask(f"question {k}|", max_tokens=50) for k in range(5)]
        out = await scheduler.generate(prompts)
    finally:
        scheduler.close()
    assert [cs[0].text for cs in out] == [f"{k} noitseuq" for k in range(5)]
    assert fake.most_logits <= 2


async def test_a_deadline_stops_its_caller_only(scheduler: Scheduler, fake: FakeDecoder) -> None:
    fake.reply = lambda prompt, seed: (prompt + b" ") * 4
    hurried, calm = Meter(Budget(seconds=3600)), Meter(Budget(seconds=3600))

    def deadline_passes(step: int) -> None:
        if step == 8:
            hurried.deadline = time.monotonic() - 1

    fake.on_step = deadline_passes
    heard = Listener()
    [[cut]], [[whole]] = await asyncio.gather(
        scheduler.generate([ask("a long story|", max_tokens=500)], hurried, heard.completion, heard.delta),
        scheduler.generate([ask("another story|", max_tokens=500)], calm),
    )
    full = "a long story " * 4
    assert cut.finish_reason == "budget" and hurried.stopped_by == "seconds"
    assert 0 < cut.completion_tokens < len(full)
    assert cut.text == full[: len(cut.text)] == heard.text(0, 0)
    assert hurried.completion_tokens == cut.completion_tokens
    assert whole.finish_reason == "stop" and whole.text == "another story " * 4
    assert calm.stopped_by is None


async def test_prefix_cache_reuses_and_evicts_the_oldest(scheduler: Scheduler) -> None:
    stats = scheduler.stats

    async def evaluated(prompt: str) -> int:
        before = stats.prompt_tokens_evaluated
        [[c]] = await scheduler.generate([ask(prompt, max_tokens=3)])
        assert c.text == echo(prompt[:-1].encode(), None).decode()[:3]  # the KV held the right prompt
        return stats.prompt_tokens_evaluated - before

    assert await evaluated("Solve 12|") == len("Solve 12")
    assert await evaluated("Solve 12|step one|") == len("|step one")  # only the new tokens
    await evaluated("Other A|")
    await evaluated("Other B|")  # the cache holds 2 prompts: "Solve 12|step one" is gone
    assert await evaluated("Solve 12|step one|step two|") == len("Solve 12|step one|step two")
    assert await evaluated("Other B|again|") == len("|again")


async def test_cancel_frees_its_sequences_and_keeps_the_partial_text(
    scheduler: Scheduler, fake: FakeDecoder
) -> None:
    fake.reply = lambda prompt, seed: prompt * 40
    loop = asyncio.get_running_loop()
    started, resume = asyncio.Event(), threading.Event()

    def pause(step: int) -> None:  # the worker waits at step 5 until the caller has cancelled
        if step == 5:
            loop.call_soon_threadsafe(started.set)
            resume.wait(10)

    fake.on_step = pause
    heard = Listener()
    request = ask("story|", n=2, temperature=0.7, max_tokens=200)  # both fit the 512 cells
    task = asyncio.create_task(scheduler.generate([request], None, heard.completion, heard.delta))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    resume.set()
    [[after]] = await scheduler.generate([ask("next|", max_tokens=10)])  # the worker moved on
    assert after.text == "nextnextne"
    assert not scheduler.seqs and fake.live_samplers == 0
    assert fake.sequences_in_use() <= {e.seq_id for e in scheduler._cache}
    for i in range(2):
        partial = heard.text(0, i)
        assert partial and ("story" * 40).startswith(partial)
    assert not [e for e in heard.events if e[0] == "done"]  # a cancelled caller hears no completion


async def test_deltas_are_whole_characters_and_never_a_stop_strings_start(
    scheduler: Scheduler, fake: FakeDecoder
) -> None:
    fake.reply = lambda prompt, seed: "café → naïve; xa yab STOP after".encode()
    heard = Listener()
    out = await scheduler.generate(
        [ask("q|", max_tokens=100, stop=["STOP"]), ask("r|", max_tokens=100, stop=["ab"])],
        None,
        heard.completion,
        heard.delta,
    )
    assert [cs[0].text for cs in out] == ["café → naïve; xa yab ", "café → naïve; xa y"]
    for r in range(2):
        assert heard.text(r, 0) == out[r][0].text
        order = [kind for kind, rr, _, _ in heard.events if rr == r]
        assert order[-1] == "done" and order.count("done") == 1  # every delta came first
    pieces = [t for kind, _, _, t in heard.events if kind == "delta"]
    assert all("\ufffd" not in t and "S" not in t for t in pieces)
    assert len(pieces) > 10  # one per token, not one per sample


async def test_a_decoder_failure_fails_the_work_in_flight_only(
    scheduler: Scheduler, fake: FakeDecoder
) -> None:
    def fail_once(step: int) -> None:
        if step == 3:
            raise RuntimeError("boom")

    fake.on_step = fail_once
    [[failed]] = await scheduler.generate([ask("doomed|", max_tokens=50)])
    assert failed.finish_reason == "error" and failed.error and "boom" in failed.error
    [[ok]] = await scheduler.generate([ask("fine|", max_tokens=50)])
    assert ok.text == "enif" and ok.finish_reason == "stop"


async def test_closed_scheduler_refuses_new_work(fake: FakeDecoder) -> None:
    scheduler = make(fake)
    scheduler.close()
    with pytest.raises(RuntimeError, match="closed"):
        await scheduler.generate([ask("late|")])
