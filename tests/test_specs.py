"""Strategies as data: exports, validation, the spec grammar, the JSON form and the JSON Schema.

The round trips are checked on hand-written compositions and on random ones (hypothesis
draws any registered strategy with random valid parameters, nested strategies inside), so
"any composition" is tested, not just the ones someone thought of. No model needed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ponder.strategies
import ponder.verifiers
from fakes import ScriptedEngine
from ponder.bench import split_strategies
from ponder.problem import Problem
from ponder.strategies import (
    MAX_DEPTH,
    REGISTRY,
    BestOfN,
    BudgetForcing,
    Refine,
    SelfConsistency,
    Strategy,
    StrategyError,
    parse_strategy,
    strategy_json_schema,
)
from ponder.strategies.base import COUNT
from ponder.strategies.spec import format_value, split_spec
from ponder.verifiers import Judge, MathEquivalence, Regex, Reward, UnitTests

VALIDATOR = jsonschema.Draft202012Validator(strategy_json_schema())


# --- exports ----------------------------------------------------------------------------------


def test_every_strategy_class_is_exported_and_the_readme_import_works() -> None:
    from ponder.strategies import MCTS, BeamSearch, Refine, SelfConsistency  # noqa: F401  (the README's)

    all_ = ponder.strategies.__all__
    missing = [c.__name__ for c in REGISTRY.values() if getattr(ponder.strategies, c.__name__, None) is not c]
    missing += [c.__name__ for c in REGISTRY.values() if c.__name__ not in all_]
    assert not missing, f"add to ponder.strategies.__all__: {missing}"
    assert len(REGISTRY) >= 11


def test_every_verifier_class_is_exported() -> None:
    public = set()
    for module in pkgutil.iter_modules(ponder.verifiers.__path__):
        mod = importlib.import_module(f"ponder.verifiers.{module.name}")
        public |= {
            cls
            for name, cls in vars(mod).items()
            if inspect.isclass(cls)
            and not name.startswith("_")
            and cls.__module__ == mod.__name__
            and callable(getattr(cls, "verify", None))
        }
    exported = {getattr(ponder.verifiers, name) for name in ponder.verifiers.__all__}
    assert {"Judge", "Reward", "UnitTests", "AllOf"} <= {c.__name__ for c in public}
    assert not {c.__name__ for c in public - exported}


# --- hand-written round trips -----------------------------------------------------------------


def test_the_nested_spec_keeps_the_inner_strategy() -> None:
    s = BestOfN(n=4, of=Refine(max_rounds=2))
    assert s.spec() == "best-of-n:n=4,of=(refine:max_rounds=2)"
    assert parse_strategy(s.spec()) == s
    assert parse_strategy("best-of-n:n=4,of=refine") == BestOfN(n=4, of=Refine())  # bare works too


def test_two_levels_of_nesting_in_text_and_json() -> None:
    s = BestOfN(n=3, of=BestOfN(n=2, weighted=True, of=Refine(max_rounds=1, temperature=0.3)))
    text = "best-of-n:n=3,of=(best-of-n:n=2,weighted=true,of=(refine:max_rounds=1,temperature=0.3))"
    data = {
        "name": "best-of-n",
        "n": 3,
        "of": {
            "name": "best-of-n",
            "n": 2,
            "weighted": True,
            "of": {"name": "refine", "max_rounds": 1, "temperature": 0.3},
        },
    }
    assert s.spec() == text and s.to_dict() == data
    assert parse_strategy(text) == s == parse_strategy(data) == parse_strategy(json.loads(json.dumps(data)))
    # JSON may hold a nested spec string, and the text form may hold spaces and dashes
    assert parse_strategy({"name": "best-of-n", "n": 3, "of": text.split("of=", 1)[1][1:-1]}) == s
    assert (
        parse_strategy(
            " best-of-n : n = 3 , of = ( best-of-n:n=2,weighted,of=(refine:max-rounds=1,temperature=0.3) ) "
        )
        == s
    )


@pytest.mark.parametrize("cls", sorted(REGISTRY.values(), key=lambda c: c.name), ids=lambda c: c.name)
def test_every_strategy_round_trips_with_defaults_and_changed_parameters(cls: type[Strategy]) -> None:
    assert cls().spec() == cls.name and cls().to_dict() == {"name": cls.name}
    assert parse_strategy(cls.name) == cls()
    changed = cls(**_changed_values(cls))
    for s in (changed, BestOfN(of=BestOfN(n=2, of=changed))):
        assert parse_strategy(s.spec()) == s, s.spec()
        assert parse_strategy(json.loads(json.dumps(s.to_dict()))) == s
        VALIDATOR.validate(s.to_dict())
        jsonschema.validate(s.to_dict(), type(s).json_schema())
    for p in cls.parameters():  # each changed parameter shows in the spec
        assert f"{p.name}=" in changed.spec()


def _changed_values(cls: type[Strategy]) -> dict[str, Any]:
    """A valid value different from the default for every plain parameter."""
    props = cls.json_schema()["properties"]
    out: dict[str, Any] = {}
    for p in cls.parameters():
        prop = props[p.name]
        if "enum" in prop:
            out[p.name] = next(v for v in prop["enum"] if v != p.default)
        elif prop["type"] == "boolean":
            out[p.name] = not p.default
        elif prop["type"] == "integer":
            out[p.name] = p.default + 1
        elif prop["type"] == "number":
            low = prop.get("minimum", prop.get("exclusiveMinimum", 0.0))
            value = low + (prop.get("maximum", low + 2) - low) / 3  # a float repr must keep exact
            out[p.name] = value if value != p.default else (value + low) / 2
        else:
            out[p.name] = f'{p.default}, (sic) "x"=y'
    return out


@pytest.mark.parametrize(
    "value",
    [
        "Hmm, wait",
        "(wait)",
        'say "hi"',
        "a=b",
        "",
        "  padded ",
        "new\nline",
        "tab\t",
        "back\\slash",
        "ünï ✓",
        ")",
        "\\n",
    ],
)
def test_values_with_special_characters_are_quoted_and_read_back(value: str) -> None:
    s = BudgetForcing(wait=value)
    assert parse_strategy(s.spec()) == s
    assert split_spec(f"budget-forcing:wait={format_value(value)}") == ("budget-forcing", [("wait", value)])
    assert format_value("plain-text:ok") == "plain-text:ok"  # no needless quotes


def test_parentheses_and_quotes_group_values_by_hand() -> None:
    assert parse_strategy('budget-forcing:wait="Hmm, wait",max_waits=1').wait == "Hmm, wait"  # type: ignore[attr-defined]
    assert parse_strategy("budget-forcing:wait=(Hmm, wait)").wait == "Hmm, wait"  # type: ignore[attr-defined]
    assert parse_strategy('budget-forcing:wait=(a ")" b)').wait == 'a ")" b'  # type: ignore[attr-defined]


def test_verifier_fields_take_a_verifier_spec(tmp_path: Path) -> None:
    s = parse_strategy("best-of-n:n=2,of=(refine:verifier=math),verifier=regex:^(yes|no)$")
    assert isinstance(s, BestOfN) and isinstance(s.of, Refine)
    assert isinstance(s.of.verifier, MathEquivalence)
    assert isinstance(s.verifier, Regex) and s.verifier.pattern.pattern == "^(yes|no)$"
    assert s.spec() == 'best-of-n:n=2,of=(refine:verifier=math),verifier="regex:^(yes|no)$"'
    assert parse_strategy(s.spec()).spec() == s.spec()
    assert s.to_dict() == {
        "name": "best-of-n",
        "n": 2,
        "of": {"name": "refine", "verifier": "math"},
        "verifier": "regex:^(yes|no)$",
    }
    assert parse_strategy(s.to_dict()).spec() == s.spec()
    VALIDATOR.validate(s.to_dict())
    tests = tmp_path / "test_x.py"
    tests.write_text("def test_x():\n    assert True\n")
    r = parse_strategy(f"refine:verifier=tests:{tests}")
    assert (
        isinstance(r, Refine)
        and isinstance(r.verifier, UnitTests)
        and "assert True" in (r.verifier.tests or "")
    )
    assert parse_strategy(r.spec()).spec() == r.spec() == f"refine:verifier=tests:{tests}"
    # a verifier built in Python has no spec: the strategy's spec leaves it out (documented)
    assert Refine(verifier=MathEquivalence()).spec() == "refine"


async def test_judge_and_reward_in_a_spec_grade_with_the_given_engine() -> None:
    engine = ScriptedEngine(["Correct. Score: 9"])
    s = parse_strategy("best-of-n:n=2,of=(refine:verifier=judge),verifier=reward", engine=engine)
    assert isinstance(s, BestOfN) and isinstance(s.verifier, Reward) and isinstance(s.of, Refine)
    assert isinstance(s.of.verifier, Judge) and s.of.verifier.engine is engine
    assert (await s.of.verifier.verify(Problem("q"), "a")).passed
    assert s.spec() == "best-of-n:n=2,of=(refine:verifier=judge),verifier=reward"
    assert parse_strategy(s.spec(), engine=engine).spec() == s.spec()


def test_a_spec_may_be_json_text_and_typos_get_a_suggestion() -> None:
    text = '{"name": "best-of-n", "n": 4, "of": {"name": "refine", "max_rounds": 2}}'
    assert parse_strategy(text) == BestOfN(n=4, of=Refine(max_rounds=2))
    with pytest.raises(StrategyError, match="did you mean 'max_rounds'"):
        parse_strategy("refine:max_round=2")
    with pytest.raises(StrategyError, match="did you mean 'self-consistency'"):
        parse_strategy("self-consistancy:n=3")


def test_overrides_and_python_values_are_checked_and_coerced() -> None:
    assert parse_strategy("self-consistency:n=4", n=3) == SelfConsistency(n=3)
    assert parse_strategy("self-consistency:n=4", n=None) == SelfConsistency(n=4)
    assert SelfConsistency(temperature=1).temperature == 1.0  # type: ignore[arg-type]
    assert parse_strategy({"name": "self-consistency", "n": "4"}) == SelfConsistency(n=4)


# --- bad input --------------------------------------------------------------------------------

DEEP = "best-of-n:of=(" * (MAX_DEPTH + 1) + "direct" + ")" * (MAX_DEPTH + 1)

BAD: list[tuple[Any, str]] = [
    ("telepathy", "unknown strategy 'telepathy'"),
    ("", "unknown strategy ''"),
    ("best-of-n:of=(refine", "unbalanced '('"),
    ("best-of-n:of=refine)", "unbalanced ')'"),
    ("best-of-n:n=4,of=(refine:max_rounds=2))", "unbalanced ')'"),
    ('budget-forcing:wait="Hmm', "unterminated quote"),
    ('budget-forcing:wait="a"b', "bad quoted value"),
    ("self-consistency:=3", "bad parameter '=3'"),
    ("self-consistency:width=3", "strategy 'self-consistency' has no parameter 'width'"),
    ("self-consistency:name=x", "has no parameter 'name'"),
    ("self-consistency:n=1,n=2", "parameter n given twice"),
    ("self-consistency:n=many", "parameter n wants int, got 'many'"),
    ("self-consistency:n=2.5", "parameter n wants int"),
    ("self-consistency:n", "parameter n wants int, got 'true'"),
    ("self-consistency:n=0", "parameter n must be >= 1"),
    ("self-consistency:n=100000000", "parameter n must be <= 1000000"),
    ("self-consistency:temperature=-1", "parameter temperature must be >= 0"),
    ("self-consistency:temperature=1e9", "parameter temperature must be <= 2"),
    ("self-consistency:temperature=nan", "parameter temperature must be a number, not NaN"),
    ("self-consistency:top_p=nan", "parameter top_p must be a number, not NaN"),
    ("self-consistency:top_p=0", "parameter top_p must be > 0"),
    ("mcts:c=inf", "strategy 'mcts': parameter c must be a finite number"),
    ("best-of-n:weighted=maybe", "parameter weighted wants bool"),
    ("mcts:value=vibes", "parameter value must be 'rollout', 'agreement' or 'score'"),
    ("beam-search:delimiter=", "parameter delimiter must not be empty"),
    ("budget-forcing:min_tokens=300", "parameter min_tokens must be <= max_tokens"),
    ("deepconf:top_k=1", "strategy 'deepconf': parameter top_k must be >= 2"),
    ("best-of-n:of=(refine:max_rounds=-1)", "strategy 'refine': parameter max_rounds must be >= 0"),
    ("best-of-n:of=(telepathy)", "unknown strategy 'telepathy'"),
    ("refine:verifier=judge", "parameter verifier: verifier 'judge' needs an engine"),
    ("refine:verifier=vibes", "parameter verifier: unknown verifier spec"),
    ("refine:verifier=tests:/no/such/file.py", "tests file not found"),
    (DEEP, f"nested more than {MAX_DEPTH} deep"),
    ({"n": 4}, 'needs a "name"'),
    ('{"name": "best-of-n", "n": 4', "bad JSON strategy"),
    ({"name": "best-of-n", "n": [4]}, "parameter n wants int"),
    ({"name": "best-of-n", "of": 5}, "a strategy is a spec string or an object, not int"),
    (
        {"name": "best-of-n", "of": {"name": "refine", "rounds": 2}},
        "strategy 'refine' has no parameter 'rounds'",
    ),
    ({"name": "best-of-n", "n": True}, "parameter n wants int"),
    (5, "a strategy is a spec string or an object, not int"),
]


@pytest.mark.parametrize(("spec", "message"), BAD, ids=[str(b[0])[:40] for b in BAD])
def test_bad_specs_give_one_line_strategy_errors(spec: Any, message: str) -> None:
    with pytest.raises(StrategyError) as caught:
        parse_strategy(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_python_constructors_check_their_values() -> None:
    for build, message in [
        (lambda: SelfConsistency(n=0), "strategy 'self-consistency': parameter n must be >= 1"),
        (lambda: SelfConsistency(temperature=math.nan), "parameter temperature must be a number, not NaN"),
        (lambda: SelfConsistency(top_p=1.5), "parameter top_p must be <= 1"),
        (lambda: BestOfN(of="refine"), "parameter of wants a strategy, got str"),  # type: ignore[arg-type]
        (lambda: Refine(verifier="math"), "parameter verifier wants a verifier, got str"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(StrategyError, match=message.replace("(", r"\(")):
            build()


def test_infinity_where_the_default_is_infinite_and_own_checks_need_no_super() -> None:
    @dataclass
    class Toy(Strategy):
        name = "toy"
        summary = "a strategy for this test only"

        threshold: float = field(
            default=math.inf, metadata={"help": "answer at once above this (inf: never)"}
        )
        n: int = field(default=2, metadata={"help": "samples", **COUNT})

        def __post_init__(self) -> None:  # its own checks: the base's run first, no super() needed
            if self.n == 7:  # checked already: an int, so == works
                raise ValueError("n must not be 7")

        async def run(self, problem: Problem, ctx: Any) -> Any:
            raise NotImplementedError

    try:
        assert parse_strategy("toy:n=3,threshold=-inf") == Toy(n=3, threshold=-math.inf)
        assert parse_strategy({"name": "toy", "threshold": "1.5"}) == Toy(threshold=1.5)
        assert Toy().spec() == "toy" and parse_strategy("toy") == Toy()
        assert Toy(n="3").n == 3  # type: ignore[arg-type]
        with pytest.raises(StrategyError, match="strategy 'toy': parameter n must be >= 1"):
            Toy(n=0)
        with pytest.raises(StrategyError, match="strategy 'toy': n must not be 7"):
            parse_strategy("toy:n=7")
        schema = Toy.json_schema()
        assert "default" not in schema["properties"]["threshold"]  # JSON has no infinity
        jsonschema.Draft202012Validator.check_schema(schema)
        json.dumps(schema, allow_nan=False)
        for spec, message in [
            ("toy:threshold=nan", "must be a number, not NaN"),
            ("toy:n=0", "must be >= 1"),
        ]:
            with pytest.raises(StrategyError, match=message):
                parse_strategy(spec)
        with pytest.raises(StrategyError, match="parameter temperature must be a finite number"):
            parse_strategy("cot:temperature=inf")  # a finite default: no infinity
    finally:
        REGISTRY.pop("toy")


# --- JSON Schema ------------------------------------------------------------------------------


def test_schemas_are_valid_and_reject_what_parsing_rejects() -> None:
    jsonschema.Draft202012Validator.check_schema(strategy_json_schema())
    for cls in REGISTRY.values():
        schema = cls.json_schema()
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["properties"]["name"] == {"const": cls.name}
        assert {p.name for p in cls.parameters(nested=True)} | {"name"} == set(schema["properties"])
    good = {"name": "best-of-n", "n": 4, "of": {"name": "refine", "max_rounds": 2}, "verifier": "math"}
    VALIDATOR.validate(good)
    VALIDATOR.validate("best-of-n:n=4,of=(refine:max_rounds=2)")  # a spec string is a strategy too
    jsonschema.validate(good, BestOfN.json_schema())
    for bad in (
        {"name": "best-of-n", "n": 0},
        {"name": "best-of-n", "temperature": 2.5},
        {"name": "best-of-n", "top_p": 0},
        {"name": "best-of-n", "rounds": 2},
        {"name": "best-of-n", "of": {"name": "telepathy"}},
        {"name": "best-of-n", "of": {"name": "refine", "max_rounds": -1}},
        {"name": "mcts", "value": "vibes"},
        {"n": 4},
    ):
        assert not VALIDATOR.is_valid(bad), bad
        with pytest.raises(StrategyError):
            parse_strategy(bad)


def test_strategies_command_prints_each_schema() -> None:
    from typer.testing import CliRunner

    import ponder.cli.strategies  # noqa: F401  (registers the command)
    from ponder.cli.app import app

    result = CliRunner().invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0, result.output
    listed = {s["name"]: s for s in json.loads(result.output)}
    assert set(listed) == set(REGISTRY)
    for name, item in listed.items():
        assert item["summary"] and item["schema"] == REGISTRY[name].json_schema()
    of = next(p for p in listed["best-of-n"]["parameters"] if p["name"] == "of")
    assert of["type"] == "strategy" and of["default"] is None
    assert listed["best-of-n"]["schema"]["properties"]["of"]["anyOf"][0] == {"$ref": "#/$defs/strategy"}
    text = CliRunner().invoke(app, ["strategies"])
    assert text.exit_code == 0 and "(0, 1]" in text.output and "strategy" in text.output


def test_bench_splits_lists_of_nested_and_quoted_specs() -> None:
    text = "direct,best-of-n:n=4,of=(refine:max_rounds=2,temperature=0.5);"
    text += 'budget-forcing:wait="a, b; c",max_waits=1'
    specs = split_strategies(text)
    assert specs == [
        "direct",
        "best-of-n:n=4,of=(refine:max_rounds=2,temperature=0.5)",
        'budget-forcing:wait="a, b; c",max_waits=1',
    ]
    assert parse_strategy(specs[2]) == BudgetForcing(wait="a, b; c", max_waits=1)


# --- any composition (property-based) ---------------------------------------------------------


def _values(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    if prop["type"] == "boolean":
        return st.booleans()
    if prop["type"] == "integer":
        low = prop.get("minimum", 0)
        return st.integers(low, min(prop.get("maximum", low + 10_000), low + 10_000))
    if prop["type"] == "number":
        return st.floats(
            prop.get("minimum", prop.get("exclusiveMinimum")),
            prop.get("maximum", 1e6),
            exclude_min="exclusiveMinimum" in prop,
            allow_nan=False,
        )
    return st.text(min_size=prop.get("minLength", 0), max_size=12)


@st.composite
def any_strategy(draw: st.DrawFn, depth: int = 3) -> Strategy:
    cls = draw(st.sampled_from(sorted(REGISTRY.values(), key=lambda c: c.name)))
    properties = cls.json_schema()["properties"]
    kwargs: dict[str, Any] = {}
    for p in cls.parameters(nested=True):
        if p.type == "verifier" or not draw(st.booleans()):
            continue  # verifiers compare by identity: tested by spec above
        if p.type == "strategy":
            if depth:
                kwargs[p.name] = draw(any_strategy(depth - 1))
        else:
            kwargs[p.name] = draw(_values(properties[p.name]))
    try:
        return cls(**kwargs)
    except StrategyError:  # a check across fields (budget-forcing: min_tokens <= max_tokens)
        assume(False)
        raise


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_strategy())
def test_any_composition_round_trips_through_text_json_and_the_schema(s: Strategy) -> None:
    assert parse_strategy(s.spec()) == s, s.spec()
    data = json.loads(json.dumps(s.to_dict()))
    assert parse_strategy(data) == s
    VALIDATOR.validate(data)
    wrapped = BestOfN(n=2, of=s)
    assert parse_strategy(wrapped.spec()) == wrapped


SPEC_CHARACTERS = st.sampled_from(
    ["(", ")", ",", "=", '"', "\\", ":", " ", "n", "1", "of", "refine", "best-of-n", "{"]
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(SPEC_CHARACTERS, max_size=30).map("".join)))
def test_any_text_parses_or_is_one_strategy_error(text: str) -> None:
    for spec in (text, "best-of-n:" + text, "best-of-n:of=" + text):
        try:
            parse_strategy(spec)
        except StrategyError as exc:
            assert "\n" not in str(exc)


def test_huge_and_deep_inputs_are_one_line_errors() -> None:
    for spec in ("best-of-n:wait=" + "(" * 200_000, '{"name": ' + "[" * 100_000, "x" * 1_000_000):
        with pytest.raises(StrategyError) as caught:
            parse_strategy(spec)
        assert len(str(caught.value)) < 400
