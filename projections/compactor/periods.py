"""UTC calendar months as Unix-second ranges.

A `Period` is one closed-or-open UTC month: `start` is its first second, `end` its last second
(`start` of the next month minus one), so `start <= t <= end` selects exactly the month's rows.
"""
from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class Period(NamedTuple):
    year: int
    month: int

    # ------------------------------------------------------------------ construction
    @classmethod
    def containing(cls, ts: int) -> Period:
        """The month a Unix time falls in (UTC)."""
        moment = datetime.fromtimestamp(int(ts), tz=UTC)
        return cls(moment.year, moment.month)

    @classmethod
    def parse(cls, text: str) -> Period:
        """'2027-01' -> Period(2027, 1). Raises ValueError with the reason."""
        match = _MONTH.match(text.strip())
        if not match:
            raise ValueError(f"month {text!r} is not YYYY-MM (for example 2027-01)")
        year, month = int(match[1]), int(match[2])
        if not 1 <= month <= 12:
            raise ValueError(f"month {text!r}: {month} is not a month number (01-12)")
        if year < 1970:
            raise ValueError(f"month {text!r} is before 1970")
        return cls(year, month)

    # ------------------------------------------------------------------ arithmetic
    def shift(self, months: int) -> Period:
        index = self.year * 12 + (self.month - 1) + months
        return Period(index // 12, index % 12 + 1)

    @property
    def previous(self) -> Period:
        return self.shift(-1)

    @property
    def next(self) -> Period:
        return self.shift(1)

    @property
    def start(self) -> int:
        """First second of the month."""
        return calendar.timegm((self.year, self.month, 1, 0, 0, 0))

    @property
    def end(self) -> int:
        """Last second of the month."""
        return self.next.start - 1

    @property
    def seconds(self) -> int:
        return self.end + 1 - self.start

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def __str__(self) -> str:  # noqa: D105
        return self.label

    def is_closed(self, now: int) -> bool:
        """A month is closed once its last second has passed."""
        return self.end < now


def months_between(first: Period, last: Period) -> Iterator[Period]:
    """first, first+1, ..., last (inclusive); nothing when last < first."""
    current = first
    while current <= last:
        yield current
        current = current.next


def last_closed(now: int) -> Period:
    """The newest closed month at `now` (the month before the current one)."""
    return Period.containing(now).previous


def retention_start(now: int, retention_months: int) -> int:
    """The first second of detail that retention keeps: the start of the month `retention_months`
    before the current one. Detail observed before it is folded into summaries and pruned."""
    if retention_months < 0:
        raise ValueError("retention_months must be 0 or more")
    return Period.containing(now).shift(-retention_months).start


def iso(ts: int) -> str:
    """Unix seconds as ISO 8601 UTC with a Z, e.g. 2027-02-01T00:00:00Z."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compact_stamp(ts: int) -> str:
    """Unix seconds as a file-name stamp, e.g. 20270201T000000Z."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_time(text: str) -> int:
    """A clock given by a person: Unix seconds ('1801440000') or ISO 8601 ('2027-02-01T00:00:00Z',
    '2027-02-01T02:00:00+02:00', '2027-02-01' = midnight UTC). A time without an offset is UTC."""
    raw = text.strip()
    if re.fullmatch(r"-?\d+", raw):
        value = int(raw)
        if value < 0:
            raise ValueError(f"time {text!r} is before 1970")
        return value
    candidate = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(f"time {text!r} is neither Unix seconds nor ISO 8601 "
                         "(for example 2027-02-01T00:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())
