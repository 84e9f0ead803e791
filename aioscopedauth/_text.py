"""Text rules every stored or sent value follows: RFC 3339 timestamps and header-safe values."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ._errors import AuthDataError

__all__ = ["UNSENDABLE", "format_rfc3339", "is_header_safe", "parse_rfc3339"]

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime.

    Fractions finer than a microsecond (Codex writes nanoseconds) are truncated.

    Args:
        text: The timestamp.

    Returns:
        The instant, in UTC.

    Raises:
        AuthDataError: The text is not an RFC 3339 date-time with an offset.
    """
    if not _RFC3339.match(text):
        msg = "not an RFC 3339 timestamp with a time zone"
        raise AuthDataError(msg)
    head, dot, rest = text.replace("z", "Z").partition(".")
    if dot:
        digits = re.match(r"\d+", rest)
        assert digits is not None  # noqa: S101 -- the regex above guarantees digits after '.'
        head = f"{head}.{digits.group()[:6].ljust(6, '0')}{rest[digits.end() :]}"
    try:
        return datetime.fromisoformat(head).astimezone(UTC)
    except ValueError as exc:
        msg = "not a valid RFC 3339 timestamp"
        raise AuthDataError(msg) from exc


def format_rfc3339(moment: datetime) -> str:
    """Format an instant as Codex does: UTC, ``Z``, and 0, 3 or 6 fraction digits as needed.

    Args:
        moment: An aware datetime (a naive one is taken as UTC).

    Returns:
        For example ``2026-03-31T18:02:11.123Z``.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    base = moment.strftime("%Y-%m-%dT%H:%M:%S")
    micros = moment.microsecond
    if micros == 0:
        return f"{base}Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


_UNSENDABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
UNSENDABLE = "contains a line break, a control character or invalid Unicode"
"""How an error says that a value fails :func:`is_header_safe` (never quoting the value)."""


def is_header_safe(value: str) -> bool:
    """Whether ``value`` can be sent as an HTTP header value.

    Refused: every control character (CR, LF and NUL would split or truncate the header; the
    others make aiohttp refuse every request), DEL, and lone surrogates (they cannot be encoded
    as UTF-8, so neither sent nor saved).

    Args:
        value: A token, key or account id.

    Returns:
        ``False`` when it cannot be sent as is.
    """
    return _UNSENDABLE.search(value) is None
