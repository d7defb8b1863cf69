"""ponder: think longer instead of bigger.

Inference-time scaling strategies (self-consistency, best-of-N, refine, search), a
reasoning budget enforced while thinking, and a persisted tree of every hidden thought.
"""

from ponder.batch import Outcome, athink_many, think_many
from ponder.budget import Budget, BudgetError, Meter
from ponder.problem import Problem
from ponder.store import TraceStore
from ponder.think import Answer, Usage, athink, think

__all__ = [
    "Answer",
    "Budget",
    "BudgetError",
    "Meter",
    "Outcome",
    "Problem",
    "TraceStore",
    "Usage",
    "athink",
    "athink_many",
    "think",
    "think_many",
]
__version__ = "0.1.0"
