import math
import time

import pytest

from ponder.budget import Budget, BudgetError, Meter


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("30s", Budget(seconds=30)),
        ("2m", Budget(seconds=120)),
        ("1.5h", Budget(seconds=5400)),
        ("500ms", Budget(seconds=0.5)),
        ("4000tok", Budget(tokens=4000)),
        ("20k tokens", Budget(tokens=20000)),
        ("$0.02", Budget(usd=0.02)),
        ("0.5 usd", Budget(usd=0.5)),
        ("16 samples", Budget(samples=16)),
        ("30s, 4000tok", Budget(seconds=30, tokens=4000)),
    ],
)
def test_parse(spec: str, expected: Budget) -> None:
    assert Budget.parse(spec) == expected


def test_parse_combines_keeping_the_stricter_limit() -> None:
    assert Budget.parse("30s", "10s", "16 samples") == Budget(seconds=10, samples=16)


@pytest.mark.parametrize("spec", ["", "abc", "30 parsecs", "-5s", "0tok", "1.5 samples", "$", "nan s"])
def test_parse_rejects(spec: str) -> None:
    with pytest.raises(BudgetError):
        b = Budget.parse(spec)
        if b == Budget():  # an empty spec is not a budget on the command line
            raise BudgetError("empty")


def test_meter_reports_first_exhausted_limit_and_remembers_it() -> None:
    meter = Meter(Budget(tokens=10, samples=3))
    assert meter.exhausted() is None
    meter.charge(completion_tokens=6, samples=1)
    assert meter.tokens_left() == 4 and meter.samples_left() == 2
    meter.charge(completion_tokens=5)
    assert meter.exhausted() == "tokens"
    meter.charge(samples=5)
    assert meter.exhausted() == "tokens"  # still the tokens limit that hit first
    assert meter.stopped_by == "tokens"


def test_meter_deadline() -> None:
    meter = Meter(Budget(seconds=0.05))
    assert meter.seconds_left() > 0
    time.sleep(0.06)
    assert meter.exhausted() == "seconds"
    assert Meter().seconds_left() == math.inf


def test_usd_limit() -> None:
    meter = Meter(Budget(usd=0.01))
    meter.charge(usd=0.011)
    assert meter.exhausted() == "usd"
