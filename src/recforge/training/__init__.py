"""The training engine shared by every gradient-trained model."""

from recforge.training.trainer import Trainer, TrainingState

__all__ = ["Trainer", "TrainingState"]
