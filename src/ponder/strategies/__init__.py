"""Strategies that spend compute at request time. Importing this package registers every
strategy module in it, so adding a strategy is adding one file."""

import importlib
import pkgutil

from ponder.strategies.base import REGISTRY, Result, Strategy, StrategyError, parse_strategy
from ponder.strategies.direct import Direct
from ponder.strategies.self_consistency import SelfConsistency

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["REGISTRY", "Direct", "Result", "SelfConsistency", "Strategy", "StrategyError", "parse_strategy"]
