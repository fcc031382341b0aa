"""recforge: build, evaluate and serve recommender systems with PyTorch."""

from recforge.data.interactions import Interactions
from recforge.data.vocabulary import Vocabulary
from recforge.errors import ConfigError, DataError, ModelError, RecforgeError

__version__ = "0.1.0"

__all__ = [
    "Interactions",
    "Vocabulary",
    "RecforgeError",
    "DataError",
    "ConfigError",
    "ModelError",
    "__version__",
]
