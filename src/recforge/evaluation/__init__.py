"""Evaluation: metrics (pure functions), the batched evaluation protocol and next-item
evaluation."""

from recforge.evaluation.evaluate import EvaluationResult, RankingModel, bootstrap_ci, evaluate
from recforge.evaluation.metrics import Metric, parse_metrics
from recforge.evaluation.next_item import (
    DEFAULT_LENGTH_BINS,
    NextItemModel,
    NextItemResult,
    evaluate_next_item,
    evaluate_sessions,
)

__all__ = ["evaluate", "EvaluationResult", "RankingModel", "bootstrap_ci", "Metric",
           "parse_metrics", "evaluate_next_item", "evaluate_sessions", "NextItemResult",
           "NextItemModel", "DEFAULT_LENGTH_BINS"]
