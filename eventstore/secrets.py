"""Keys are secrets: strip them from URLs, name them by a short fingerprint, scrub them from any text.

A key can hide in more places than a URL's `key=`: a paging link inside a body (`_metadata.links.next`),
an HTML error page that echoes the request, a capture line cut short, an `Authorization: ApiKey ...`
header copied into a message. `scrub` removes all of them; `has_key_material` is the cheap test that
lets the hot path skip it.
"""
from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"

# key=VALUE anywhere (query strings, links, echoed requests, `&amp;key=` in HTML); ApiKey VALUE (the v2
# Authorization header); "key": "VALUE" (a request echoed as JSON). Values are what Torn keys are made of.
_KEY_TEXT = re.compile(r"""(?i)(key=)[^&#\s"'<>\\]+|(apikey\s+)[A-Za-z0-9]+|("key"\s*:\s*")[^"\\]+""")
_KEY_BYTES = re.compile(rb"(?i)key=|apikey|\"key\"")


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


def has_key_material(data: str | bytes) -> bool:
    """True when `data` may hold a key (`key=`, `ApiKey`, `"key":`): a fast check before `scrub`."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return _KEY_BYTES.search(data) is not None


def _redact(match: re.Match) -> str:
    return (match[1] or match[2] or match[3]) + REDACTED


def scrub(text: str, keys: tuple[str, ...] | list[str] = ()) -> str:
    """Text safe to store, log or raise: key material redacted, every known key replaced by its fingerprint."""
    for key in keys:
        if key:
            text = text.replace(key, fingerprint(key))
    return _KEY_TEXT.sub(_redact, text)
