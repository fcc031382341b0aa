"""Evaluation: metrics (pure functions) and the batched evaluation protocol."""

from recforge.evaluation.evaluate import EvaluationResult, RankingModel, bootstrap_ci, evaluate
from recforge.evaluation.metrics import Metric, parse_metrics

__all__ = ["evaluate", "EvaluationResult", "RankingModel", "bootstrap_ci", "Metric",
           "parse_metrics"]
