"""From an OpenAI chat request to what ponder will do: the problem, the strategy, the budget
and the sampling settings, every choice either honoured or refused with a 400 naming the
field.

Choosing the thinking, first match wins:
1. `extra_body={"ponder": {"strategy": ..., "budget": ...}}`;
2. the strategy in the model name, `<strategy spec>/<model>` (e.g. `self-consistency:n=8/ponder`);
3. `reasoning_effort`, mapped by `EFFORT` below;
4. the server's default strategy and budget.
A budget from 1 applies whatever chose the strategy; `max_completion_tokens` adds a token
limit on everything generated (thoughts included, as for OpenAI's reasoning models); the
server's own cap (`--max-seconds`) always applies.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ponder.budget import Budget, BudgetError
from ponder.engines.base import Engine
from ponder.problem import Problem, ProblemError
from ponder.server.wire import ApiError, BudgetIn, ChatRequest, validation_error
from ponder.strategies import REGISTRY, Strategy, StrategyError, parse_strategy
from ponder.strategies.base import DEFAULT_STRATEGY

# reasoning_effort -> (strategy, budget). Cheap to dear: one greedy answer; a small vote; an
# adaptive vote that stops when the answer is settled; the same allowed to go twice as far.
EFFORT: dict[str, tuple[str, Budget]] = {
    "none": ("direct", Budget(seconds=30)),
    "minimal": ("direct", Budget(seconds=30)),
    "low": ("self-consistency:n=4", Budget(seconds=30)),
    "medium": ("adaptive-consistency:max_n=8", Budget(seconds=60)),
    "high": ("adaptive-consistency:max_n=16", Budget(seconds=180)),
}
ALIAS = "ponder"


@dataclass(frozen=True)
class Plan:
    problem: Problem
    strategy: Strategy
    budget: Budget
    max_tokens: int
    seed: int
    n: int
    stop: list[str]
    model: str  # the requested name, echoed back as the response's model

    @property
    def spec(self) -> str:
        return self.strategy.spec()

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON data: what a queued job keeps in the store to run after a restart."""
        return {
            "messages": self.problem.messages,
            "format": self.problem.format,
            "strategy": self.strategy.to_dict(),
            "budget": self.budget.to_dict(),
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "n": self.n,
            "stop": self.stop,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], engine: Engine) -> Plan:
        """The plan `to_dict` wrote; ValueError (or KeyError, TypeError) if it cannot be rebuilt
        here (a strategy this ponder or engine does not know)."""
        return cls(
            problem=Problem.from_messages(data["messages"], format=data["format"]),
            strategy=parse_strategy(data["strategy"], engine=engine),
            budget=Budget(**data["budget"]),
            max_tokens=int(data["max_tokens"]),
            seed=int(data["seed"]),
            n=int(data["n"]),
            stop=[str(s) for s in data["stop"]],
            model=str(data["model"]),
        )


@dataclass(frozen=True)
class Defaults:
    """What the server does when the request does not say."""

    strategy: str = DEFAULT_STRATEGY
    budget: Budget = field(default_factory=lambda: Budget(seconds=60))
    cap: Budget = field(default_factory=lambda: Budget(seconds=600))
    max_tokens: int = 512
    priced: bool = False  # the engine has a price, so a dollar budget means something


def split_model(name: str, served: str) -> tuple[str | None, str]:
    """(strategy spec or None, model) from `[<strategy spec>/]<model>`; the model part must
    be the served model or the alias "ponder"."""
    known = {ALIAS, served}
    head, slash, tail = name.partition("/")
    if slash and head.partition(":")[0].strip() in REGISTRY:
        spec, model = head, tail
    elif name in known:
        spec, model = None, name
    elif not slash and name.partition(":")[0].strip() in REGISTRY:
        spec, model = name, ALIAS
    else:
        spec, model = None, name
    if model not in known:
        raise ApiError(
            404,
            f"model {name!r} does not exist: use {served!r}, {ALIAS!r} or '<strategy>/{ALIAS}'",
            param="model",
            code="model_not_found",
        )
    return spec, model


def plan(request: ChatRequest, engine: Engine, served: str, defaults: Defaults) -> Plan:
    extra = request.ponder
    try:
        problem = Problem.from_messages(request.messages, format=(extra.format if extra else None) or "auto")
    except ProblemError as exc:
        raise ApiError(400, f"messages: {exc}", param="messages") from None
    named, _ = split_model(request.model, served)
    effort = EFFORT.get(request.reasoning_effort or "")
    spec = (extra.strategy if extra else None) or named or (effort[0] if effort else defaults.strategy)
    if not isinstance(spec, str | dict):
        raise ApiError(400, "ponder.strategy: give a spec string or an object", param="ponder.strategy")
    param = "ponder.strategy" if extra and extra.strategy else "model" if named else "reasoning_effort"
    try:
        strategy = parse_strategy(spec, engine=engine)
    except StrategyError as exc:
        raise ApiError(400, f"{param}: {exc}", param=param) from None
    strategy = _sampling(strategy, request)
    budget = _budget(request, effort, defaults)
    max_tokens = min(request.max_tokens or defaults.max_tokens, request.max_completion_tokens or 1 << 30)
    return Plan(
        problem=problem,
        strategy=strategy,
        budget=budget,
        max_tokens=max_tokens,
        seed=request.seed if request.seed is not None else 0,
        n=request.n,
        stop=request.stops(),
        model=request.model,
    )


def _sampling(strategy: Strategy, request: ChatRequest) -> Strategy:
    """temperature / top_p set the strategy's own sampling settings; a strategy that decodes
    greedily (no such parameter) accepts only temperature 0."""
    names = {f.name for f in dataclasses.fields(strategy)}
    changes = {}
    for field_name, value, neutral in (
        ("temperature", request.temperature, 0.0),
        ("top_p", request.top_p, 1.0),
    ):
        if value is None:
            continue
        if field_name in names:
            changes[field_name] = value
        elif value != neutral:
            raise ApiError(
                400,
                f"{field_name}: strategy {strategy.name!r} decodes greedily; omit {field_name} or"
                " choose a sampling strategy",
                param=field_name,
            )
    try:
        return dataclasses.replace(strategy, **changes) if changes else strategy
    except (TypeError, ValueError) as exc:
        raise ApiError(400, f"temperature: {exc}", param="temperature") from None


def _fields(given: Any) -> BudgetIn:
    try:
        return BudgetIn.model_validate(given)
    except ValidationError as exc:
        error = validation_error(exc)
        param = "ponder.budget" + (f".{error.param}" if error.param else "")
        raise ApiError(400, f"ponder.budget.{error.message}", param=param) from None


def _budget(request: ChatRequest, effort: tuple[str, Budget] | None, defaults: Defaults) -> Budget:
    given = request.ponder.budget if request.ponder else None
    try:
        if isinstance(given, str):
            budget = Budget.parse(given)
        elif given is not None:
            budget = Budget(**_fields(given).model_dump())
        else:
            budget = effort[1] if effort else defaults.budget
        if request.max_completion_tokens:
            budget = budget.merge(Budget(tokens=request.max_completion_tokens))
    except BudgetError as exc:
        field_name = next((k for k in ("seconds", "tokens", "usd", "samples") if k in str(exc)), None)
        param = "ponder.budget" + (f".{field_name}" if field_name and not isinstance(given, str) else "")
        raise ApiError(400, f"{param}: {exc}", param=param) from None
    if budget.usd is not None and not defaults.priced:
        raise ApiError(
            400,
            "ponder.budget.usd: this server's engine has no price; start it with --price-input and"
            " --price-output",
            param="ponder.budget.usd",
        )
    return budget.merge(defaults.cap)
