"""`Duration`: a settings type for lengths of time, as people write them in an environment.

Accepted: seconds as a number (`3600`, also as text: `"3600"`, `"0.5"`), a number with a
unit (`"90s"`, `"15m"`, `"24h"`, `"7d"`), or ISO 8601 (`"P30D"`, `"PT1H"`). Pydantic's own
`timedelta` refuses `"3600"` from an environment variable, where every value is text.
"""

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WRITTEN = re.compile(r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]?)")


def parse_duration(value: object) -> object:
    """Text in seconds or with a unit as a timedelta; anything else is left to pydantic (a
    number of seconds, ISO 8601, a timedelta), which refuses what it cannot read."""
    if not isinstance(value, str):
        return value
    if written := _WRITTEN.fullmatch(value.strip()):
        seconds = float(written["amount"]) * UNITS[written["unit"] or "s"]
        return timedelta(seconds=seconds)
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
"""A length of time: `3600`, `"90s"`, `"15m"`, `"24h"`, `"7d"` or ISO 8601 (`"P30D"`)."""
