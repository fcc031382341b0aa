"""Interaction data: ``Interactions`` and ``Vocabulary``; readers in
:mod:`recforge.data.readers`, splits in :mod:`recforge.data.split`, features in
:mod:`recforge.data.features`, MovieLens in :mod:`recforge.data.movielens`."""

from recforge.data.interactions import Interactions
from recforge.data.vocabulary import Vocabulary

__all__ = ["Interactions", "Vocabulary"]
