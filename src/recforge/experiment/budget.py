"""Time budgets as users write them (``--budget 60s``, ``auto_budget: 5m``), parsed
without importing torch, so that a mistake is answered at once."""

from __future__ import annotations

import math
import re
from typing import Any

from recforge.errors import ConfigError
from recforge.models.params import shown

__all__ = ["DEFAULT_BUDGET", "MAX_BUDGET", "parse_budget"]

#: ``--budget`` / ``auto_budget``: the default, the longest, and the units it takes.
DEFAULT_BUDGET = 60.0
MAX_BUDGET = 7 * 24 * 3600.0
_BUDGET_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_budget(value: Any) -> float:
    """A time budget in seconds from ``value``: a number of seconds (``90``) or text with
    a unit ``s``, ``m`` or ``h`` (``"60s"``, ``"5m"``, ``"1.5h"``); :class:`ConfigError`
    saying what it takes otherwise, or for a budget that is not above 0 or exceeds a
    week."""
    what = ("a time budget is a number of seconds or a number with a unit s, m or h "
            f"(e.g. 60s, 5m, 90), not {shown(value)}")
    if isinstance(value, bool):
        raise ConfigError(what)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", value.lower())
        if match is None:
            raise ConfigError(what)
        seconds = float(match[1]) * _BUDGET_UNITS[match[2]]
    else:
        raise ConfigError(what)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"a time budget must be more than 0 seconds, not {shown(value)}")
    if seconds > MAX_BUDGET:
        raise ConfigError(f"a time budget of {shown(value)} exceeds a week ({MAX_BUDGET:.0f}s)")
    return seconds
