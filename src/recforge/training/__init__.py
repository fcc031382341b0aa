"""The training engine shared by every gradient-trained model."""

from recforge.training.checkpoint import TrainingState
from recforge.training.contracts import FitContext, Sampler, TrainableModel
from recforge.training.trainer import Trainer

__all__ = ["FitContext", "Sampler", "TrainableModel", "Trainer", "TrainingState"]
