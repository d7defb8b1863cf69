"""Strategies that spend compute at request time, and strategies as data (spec strings, JSON,
JSON Schema). Importing this package registers every strategy module in it; a new strategy
module's class also belongs in `__all__` (tests/test_specs.py checks)."""

import importlib
import pkgutil

from ponder.strategies.adaptive_consistency import AdaptiveConsistency
from ponder.strategies.auto import Auto
from ponder.strategies.base import (
    DEFAULT_STRATEGY,
    MAX_DEPTH,
    REGISTRY,
    Parameter,
    Result,
    Strategy,
    StrategyError,
    parse_strategy,
    strategy_json_schema,
)
from ponder.strategies.beam_search import BeamSearch
from ponder.strategies.best_of_n import BestOfN
from ponder.strategies.budget_forcing import BudgetForcing
from ponder.strategies.cot import ChainOfThought
from ponder.strategies.deepconf import DeepConf
from ponder.strategies.direct import Direct
from ponder.strategies.mcts import MCTS
from ponder.strategies.particle_filter import ParticleFilter
from ponder.strategies.refine import Refine
from ponder.strategies.self_consistency import SelfConsistency
from ponder.strategies.steps import StepSearch

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_DEPTH",
    "MCTS",
    "REGISTRY",
    "AdaptiveConsistency",
    "Auto",
    "BeamSearch",
    "BestOfN",
    "BudgetForcing",
    "ChainOfThought",
    "DeepConf",
    "Direct",
    "Parameter",
    "ParticleFilter",
    "Refine",
    "Result",
    "SelfConsistency",
    "StepSearch",
    "Strategy",
    "StrategyError",
    "parse_strategy",
    "strategy_json_schema",
]
