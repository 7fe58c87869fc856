"""Keys are secrets: strip them from URLs, name them by a short fingerprint, scrub them from text."""
from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_KEY_PARAM = re.compile(r"([?&]key=)[^&#\s\"']*", re.IGNORECASE)


def fingerprint(key: str) -> str:
    """A short, stable, non-reversible name for a key: 'k:' and 8 hex digits of its sha256."""
    return "k:" + hashlib.sha256(key.encode()).hexdigest()[:8]


def strip_key(url: str) -> str:
    """The URL without any key= parameter (case-insensitive), everything else kept in order."""
    if "key=" not in url.lower():
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "key"]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query, safe=",:/"), parts.fragment))


def scrub(text: str, keys: tuple[str, ...] | list[str] = ()) -> str:
    """Text safe to log or raise: key= values removed, and every known key replaced by its fingerprint."""
    text = _KEY_PARAM.sub(r"\1<redacted>", text)
    for key in keys:
        if key:
            text = text.replace(key, fingerprint(key))
    return text
