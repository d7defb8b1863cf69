"""Strategies that spend compute at request time. Importing this package registers them."""

from ponder.strategies.base import REGISTRY, Result, Strategy, StrategyError, parse_strategy
from ponder.strategies.direct import Direct
from ponder.strategies.self_consistency import SelfConsistency

__all__ = ["REGISTRY", "Direct", "Result", "SelfConsistency", "Strategy", "StrategyError", "parse_strategy"]
