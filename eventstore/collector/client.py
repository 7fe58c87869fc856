"""The HTTP side of the collector: one aiohttp session, explicit timeouts, keys kept out of everything kept.

A request is an `ApiRequest` (path and parameters, never the key). `TornClient.fetch(request, key)` adds
the key only on the wire, the way each API version wants it:

  * v1: `{base}/user/123?selections=profile&key=K`;
  * v2: `{base}/v2/faction/9420/members` with the header `Authorization: ApiKey K`.

It returns a `FetchResult` whose `url` is the URL without the key. The body is read in full (every response
is released), decoded as JSON with msgspec, or kept as the raw text when it is not JSON (ingest then
quarantines it). With `raw_bodies=True` an ordinary answer (a JSON object with no `error` and no
`_metadata`) is checked but not decoded: it is handed on as `msgspec.Raw`, and ingest decodes it (in
another process, with `projections.ingest_process`). Bodies over `max_body` are not decoded. HTTP errors,
timeouts and connection failures are results too (`failure` says what happened, `retryable` whether
trying again can help); no exception text from aiohttp reaches the caller unscrubbed, because for v1 it
holds the URL with the key.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import msgspec
import yarl

from ..secrets import fingerprint, scrub, strip_key
from .endpoints import OFFSET_PAGED, OffsetPaging

log = logging.getLogger("tornstore.collector")

_decode = msgspec.json.Decoder().decode
MAX_PAGES = 200   # the most pages one poll follows (a gap says so when a list has more)


class _Envelope(msgspec.Struct):
    """The top-level members the collector acts on (an error, v2 paging); the rest is skipped unread."""
    error: Any = None
    metadata: Any = msgspec.field(default=None, name="_metadata")


_probe = msgspec.json.Decoder(_Envelope).decode


@dataclass(frozen=True)
class ApiRequest:
    """What to ask for, without the key.

    `path` is relative to the API base: 'user/123' (v1) or 'v2/faction/9420/members'. `access` is the
    access level the request needs (0 public .. 3 full), `own_id` the player whose own key must be used,
    `own_faction` the faction one of whose members' keys must be used, `key_fp` the one key that must be
    used (`/v2/key/info` asks about that key), `target` the entity named in gaps (e.g. 'faction:9420'),
    `category` its selections (comma-separated: what a daily read limit, code 14, blocks).
    """
    path: str
    params: tuple[tuple[str, str], ...] = ()
    access: int = 0
    own_id: str | None = None
    target: str = ""
    category: str = ""
    own_faction: str | None = None
    key_fp: str | None = None

    @property
    def version(self) -> str:
        return "v2" if self.path.startswith("v2/") else "v1"

    def url(self, base: str) -> str:
        """The URL without the key (as stored and logged)."""
        return _url(base, self.path, self.params)


@functools.lru_cache(maxsize=8192)  # the same few hundred requests, every few minutes
def _url(base: str, path: str, params: tuple[tuple[str, str], ...]) -> str:
    query = urlencode(params, safe=",:") if params else ""
    return f"{base.rstrip('/')}/{path.lstrip('/')}" + (f"?{query}" if query else "")


@functools.lru_cache(maxsize=8192)
def _wire(url: str) -> yarl.URL:
    """The parsed URL that aiohttp would otherwise build from the string at every request. For v1 it
    holds the key: it stays in this cache and the request, never in a result, log line or message."""
    return yarl.URL(url, encoded=True)


@dataclass
class FetchResult:
    request: ApiRequest
    url: str                        # without the key
    observed_at: int
    status: int | None = None       # HTTP status; None when no answer came
    body: Any = None                # decoded JSON, or the raw text when it was not JSON
    failure: str | None = None      # set when there is no body to ingest: "HTTP 503", "timeout after 15s"
    retryable: bool = False
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


class TornClient:
    """One aiohttp ClientSession for the whole collector. Use `async with TornClient(base) as client`."""

    def __init__(self, base: str, *, timeout: float = 15.0, max_body: int = 8 * 1024 * 1024,
                 clock: Callable[[], float] = time.time, secrets: tuple[str, ...] | list[str] = (),
                 user_agent: str = "tornstore-collector", session: aiohttp.ClientSession | None = None,
                 raw_bodies: bool = False):
        self.base = base.rstrip("/")
        self.raw_bodies = raw_bodies
        self.timeout = timeout
        self.max_body = max_body
        self.clock = clock
        self.secrets = tuple(secrets)
        self.user_agent = user_agent
        self._session = session
        self._own_session = session is None
        self.requests = 0
        base_parts = urlsplit(self.base)
        self._origin = (base_parts.scheme, base_parts.netloc)
        self._base_path = base_parts.path.rstrip("/")

    async def __aenter__(self) -> TornClient:
        self.session()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 10.0)),
                headers={"User-Agent": self.user_agent, "Accept": "application/json"},
                raise_for_status=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # the API sets none; no jar to consult per request
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _scrub(self, text: str) -> str:
        return scrub(text, self.secrets)

    async def fetch(self, request: ApiRequest, key: str) -> FetchResult:
        """One GET. Never raises for HTTP or network trouble: the result says what happened."""
        url = request.url(self.base)
        if request.version == "v2":
            wire, headers = url, {"Authorization": f"ApiKey {key}"}
        else:
            wire, headers = url + ("&" if "?" in url else "?") + "key=" + key, None
        started = time.monotonic()
        self.requests += 1
        result = FetchResult(request, url, 0)
        try:
            async with self.session().get(_wire(wire), headers=headers, allow_redirects=False) as resp:
                result.status = resp.status
                data, too_large = await self._read(resp)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            result.failure = f"timeout after {self.timeout:g}s"
            result.retryable = True
        except aiohttp.ClientError as exc:
            result.failure = self._scrub(f"connection error: {type(exc).__name__}: {exc}")
            result.retryable = True
        except (OSError, ValueError) as exc:
            result.failure = self._scrub(f"request failed: {type(exc).__name__}: {exc}")
            result.retryable = isinstance(exc, OSError)
        else:
            if too_large:
                result.failure = f"body too large (over {self.max_body} bytes)"
                result.retryable = False
            elif resp.status != 200:
                result.failure = f"HTTP {resp.status}"
                result.retryable = resp.status >= 500 or resp.status in (408, 429)
            else:
                result.body = self._body(data)
        result.observed_at = int(self.clock())
        result.elapsed = time.monotonic() - started
        if log.isEnabledFor(logging.DEBUG):
            log.debug("GET %s -> %s in %.0f ms (key %s)", url, result.failure or result.status,
                      result.elapsed * 1000, fingerprint(key))
        return result

    def _body(self, data: bytes) -> Any:
        """The decoded JSON, msgspec.Raw (see raw_bodies), or the text when it is not JSON."""
        if self.raw_bodies:
            try:
                envelope = _probe(data)
            except msgspec.DecodeError:
                pass  # not JSON, or not an object: the full decode below says which
            else:
                if envelope.error is None and envelope.metadata is None:
                    return msgspec.Raw(data)
        try:
            body = _decode(data)
        except msgspec.DecodeError:
            return data.decode("utf-8", errors="replace")
        if isinstance(body, str):  # a JSON string is no API answer either
            return data.decode("utf-8", errors="replace")
        return body

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The whole body, or (partial, True) once it passes max_body (the connection is then dropped)."""
        length = resp.content_length
        if length is not None and length > self.max_body:
            resp.close()
            return b"", True
        if length is not None:
            return await resp.read(), False  # the declared length is within the limit: one read
        data = bytearray()
        async for chunk in resp.content.iter_chunked(64 * 1024):
            data += chunk
            if len(data) > self.max_body:
                resp.close()
                return bytes(data[:0]), True
        return bytes(data), False

    def next_page(self, request: ApiRequest, body: Any) -> ApiRequest | None:
        """The request for the next page of a v2 list, or None: `_metadata.links.next`; for a list the spec
        pages by offset without links (`endpoints.OFFSET_PAGED`, a response with no `_metadata`), the
        next offset, until a page comes back shorter than the limit.

        The link carries no key (it is stripped if it does); links to another host are not followed, so a
        key is never sent anywhere but the configured API."""
        if request.version != "v2":
            return None
        paging = OFFSET_PAGED.get(request.path)
        if paging is not None and isinstance(body, msgspec.Raw):  # (raw_bodies: its items must be counted)
            try:
                body = _decode(body)
            except msgspec.DecodeError:
                return None
        if not isinstance(body, dict):
            return None
        if paging is not None and "_metadata" not in body:
            return next_offset(request, body, paging)
        meta = body.get("_metadata")
        links = meta.get("links") if isinstance(meta, dict) else None
        link = links.get("next") if isinstance(links, dict) else None
        if not isinstance(link, str) or not link.strip():
            return None
        parts = urlsplit(strip_key(link.strip()))
        if (parts.scheme or parts.netloc) and (parts.scheme, parts.netloc) != self._origin:
            log.warning("not following a next link to another host: %s://%s", parts.scheme, parts.netloc)
            return None
        path = parts.path
        if self._base_path and path.startswith(self._base_path + "/"):
            path = path[len(self._base_path):]
        path = path.lstrip("/")
        if not path.startswith("v2/"):
            path = "v2/" + path  # a link relative to the v2 root
        params = tuple((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "key")
        nxt = dataclasses.replace(request, path=path, params=params)
        if nxt.url(self.base) == request.url(self.base):
            return None
        return nxt


def next_offset(request: ApiRequest, body: dict, paging: OffsetPaging) -> ApiRequest | None:
    """The next page of a list paged by offset (`endpoints.OFFSET_PAGED`): the same request at `offset` +
    `limit`, or None once a page has fewer items than the limit (or none, or is no list)."""
    items = body.get(paging.member)
    limit = _int_param(request.params, "limit", paging.default_limit)
    if not isinstance(items, list) or not items or len(items) < limit:
        return None
    offset = _int_param(request.params, "offset", 0) + limit
    params = tuple((k, v) for k, v in request.params if k != "offset") + (("offset", str(offset)),)
    return dataclasses.replace(request, params=params)


def _int_param(params: tuple[tuple[str, str], ...], name: str, default: int) -> int:
    value = next((v for k, v in params if k == name), None)
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else default
