"""The collect loop: poll what the scheduler says, with keys from the pool, and hand responses to a sink.

    from tornstore.projections.store import Store
    from tornstore.eventstore.collector import Collector, load_config

    async with Store.open("torn.db") as store:
        async with Collector(load_config("collect.toml"), store.ingest_many, run=store.run) as collector:
            report = await collector.run_once()        # one round over every target
            # or: await collector.run_forever()        # until collector.stop()

`sink(list[Response]) -> IngestReport | None` receives success bodies (and bodies that are not JSON, which ingest
quarantines), in batches of `config.batch` or every `config.flush_every` seconds, and always before the
collector stops. Every Response names the key that made it: `key` (its fingerprint) and `owner` (the
key's owner and, when known, the owner's faction), so ingest files own-key URLs (`/v2/user/bars`,
`/v2/faction/news`) under the right entity. Torn error bodies never reach the sink: the collector records
each as a gap (with the target it was for) and acts on its code (see keypool). Codes 22 and 23 (only in
API v1 / v2) switch the job to the other version where the same selections exist there (a combined
request whose selections do not all exist there is split first), else the gap says why not.
`run(fn, *args)` (EventLog.run) is used to load and
save key state, gaps and target problems; without it they are kept in memory only (`collector.gaps`).

Key state is saved at the first flush after it changes (a pause, an error code); a key's use count and
last use are saved at most every `usage_every` seconds and when the collector closes, so a busy poller
does not rewrite its key rows with every batch.

When the config learns owners (`learn_owners`; by default when some faction item is the faction's own
data) every key asks `/v2/key/info` when the collector starts (before the first poll) and every
`OWNER_REFRESH` seconds after: the owner and faction the API names replace the config's (a mismatch is
logged). These answers are not handed to the sink.

`on_tick(now)` (sync or async) is called after each flush and at least every `tick_every` seconds while
running; the CLI uses it to run the compactor after a UTC month boundary.

`request_now(target)` queues a target ahead of every background poll and returns a future that resolves,
once its responses are committed through the sink, to the list of those responses (for a bot command).

Two clocks: `clock` (Unix seconds) stamps responses, gaps and `on_tick`; `monotonic` runs the schedule, the
flush cadence and the key pool's windows and pauses, so a wall clock set back an hour neither holds the
polls nor the keys for an hour. By default `monotonic` is `time.monotonic` when `clock` is `time.time`,
else `clock` itself (an injected, simulated clock drives both, as the demo and tests do).

`raw_bodies=True` hands ordinary bodies to the sink undecoded (`msgspec.Raw`; ingest decodes them): with
`projections.ingest_process.IngestProcess` as the sink, the collector's process then never decodes them.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..ingest import IngestReport, torn_error
from ..records import Owner, Response
from ..secrets import scrub
from ..spool import STORE_FAILURES
from . import endpoints
from . import gaps as gapstore
from .client import MAX_PAGES, ApiRequest, FetchResult, TornClient
from .config import CollectConfig
from .endpoints import Bundle
from .gaps import Gap, TargetProblem
from .keypool import (ACCESS_LEVELS, BUG as P_BUG, KEY_COOLDOWN, OTHER_VERSION, PAUSE_ALL, RETRY, RETRY_OTHER_KEY,
                      TARGET, ApiKey, KeyPool, KeysBusy, NoUsableKey, policy)
from .scheduler import (ABORTED, BUG, DEFERRED, DENIED, FAILED, NOT_FOUND, OK, RARE_NOT_FOUND, UNKNOWN, Job,
                        Scheduler, build_jobs, member_ids)

log = logging.getLogger("tornstore.collector")

Sink = Callable[[list[Response]], Awaitable[IngestReport | None]]  # None: no report (counts not added)
Runner = Callable[..., Awaitable[Any]]
Poll = tuple[str, list[Response], float | None]  # what a poll (one job) ends with: outcome, responses, not_before
OWNER_REFRESH = 3600.0     # how often each key asks /v2/key/info again (learn_owners)
KEY_JOB = "key"            # the origin of the /v2/key/info jobs


@dataclass
class CollectReport:
    """What a collector did since it started."""
    polls: int = 0
    polls_ok: int = 0
    polls_failed: int = 0
    requests: int = 0
    retries: int = 0
    responses: int = 0           # handed to the sink
    appended: int = 0
    unchanged: int = 0
    rejected: int = 0
    gaps: int = 0
    errors: Counter = field(default_factory=Counter)     # Torn error code -> count
    failures: Counter = field(default_factory=Counter)   # "HTTP 503", "timeout after 15s", ... -> count
    deferred: int = 0
    keys: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "polls": self.polls, "polls_ok": self.polls_ok, "polls_failed": self.polls_failed,
            "requests": self.requests, "retries": self.retries, "responses": self.responses,
            "appended": self.appended, "unchanged": self.unchanged, "rejected": self.rejected,
            "gaps": self.gaps, "deferred": self.deferred,
            "errors_by_code": {str(k): v for k, v in sorted(self.errors.items())},
            "failures": dict(sorted(self.failures.items())),
            "keys": self.keys,
        }


class _OnDemand:
    __slots__ = ("future", "jobs", "responses")

    def __init__(self, future: asyncio.Future, jobs: list[Job]):
        self.future = future
        self.jobs = list(jobs)                   # the job objects themselves (identity, not id())
        self.responses: list[Response] = []


class Collector:
    """Polls the Torn API per the config. See the module docstring."""

    def __init__(self, config: CollectConfig, sink: Sink, *, run: Runner | None = None,
                 on_tick: Callable[[float], Any] | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, rng: random.Random | None = None,
                 tick_every: float = 60.0, max_wait: float | None = None, backoff_base: float = 2.0,
                 backoff_cap: float = 60.0, stop_grace: float = 5.0, usage_every: float = 60.0,
                 client: TornClient | None = None, raw_bodies: bool = False,
                 monotonic: Callable[[], float] | None = None, max_pages: int = MAX_PAGES):
        self.config = config
        self.sink = sink
        self.run_db = run
        self.on_tick = on_tick
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.tick_every = tick_every
        self.max_wait = config.max_wait if max_wait is None else max_wait
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stop_grace = stop_grace
        self.usage_every = usage_every
        self.max_pages = max_pages
        self.secrets = tuple(config.secrets())
        self.pool = KeyPool(
            [ApiKey(k.secret, k.owner, ACCESS_LEVELS[k.access], k.budget,
                    faction=str(k.faction) if k.faction is not None else None) for k in config.keys],
            clock=clock, sleep=sleep, owner_limit=config.owner_limit, rng=self.rng, monotonic=monotonic)
        self.monotonic = self.pool.monotonic   # the schedule's clock too (see the module docstring)
        member_fetch = {f.id: (f.member_fetch, f.member_interval or f.interval)
                        for f in config.factions if f.members}
        jobs = build_jobs(config)
        if config.learns_owners:
            jobs += [Job(f"key:{k.fp}", ApiRequest("v2/key/info", (), 0, None, f"key:{k.fp}", key_fp=k.fp),
                         OWNER_REFRESH, origin=KEY_JOB) for k in self.pool.keys]
        self.scheduler = Scheduler(jobs, jitter=config.jitter, rng=self.rng, member_fetch=member_fetch,
                                   has_own_key=self._has_own_key)
        self.client = client or TornClient(config.api_base, timeout=config.timeout, max_body=config.max_body,
                                           clock=clock, secrets=self.secrets, raw_bodies=raw_bodies)
        self.report = CollectReport()
        self.gaps: deque[Gap] = deque(maxlen=1000)  # the latest gaps (kept in memory even without a database)
        self._pending: list[Response] = []
        self._pending_gaps: list[Gap] = []
        self._pending_problems: list[TargetProblem] = []
        self._known_problems: set[tuple[str, int]] = set()
        self._ondemand: list[_OnDemand] = []
        self._ready: list[_OnDemand] = []
        self._flush_lock = asyncio.Lock()
        self._store_down = False  # run_db failed at the last flush (logged once per incident)
        self._last_flush = 0.0
        self._usage_saved = float("-inf")
        self._last_tick: float | None = None
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._started = False
        self._running = False
        self._once = False

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        """Load saved key state and target problems; open the HTTP session."""
        if self._started:
            return
        self._started = True
        self._wake = asyncio.Event()
        self._last_flush = self.monotonic()
        if self.run_db is not None:
            rows, problems, sent = await self.run_db(gapstore.load_state, [k.fp for k in self.pool.keys],
                                                     sorted({k.owner for k in self.pool.keys}))
            self.pool.load_rows(rows)
            self.pool.load_requests(sent)   # the owners' requests of the last minute, an earlier run's too
            now, mono = self.clock(), self.monotonic()
            for target, code, last_seen, _count in problems:
                self._known_problems.add((target, code))
                if code == 6 and last_seen + RARE_NOT_FOUND > now:
                    # (no more than a day from now, should the wall clock have been set back since)
                    self.scheduler.hold(target, mono + min(last_seen + RARE_NOT_FOUND - now, RARE_NOT_FOUND))
        for key in self.pool.keys:
            if key.state == "disabled":
                log.warning("key %s is disabled (%s): it will not be used", key.fp, key.reason)
        self.client.session()
        await self._learn_owners()

    async def _learn_owners(self) -> None:
        """Ask /v2/key/info with every key (learn_owners) before the first poll: own-key polls need to
        know whose keys they have. `collect --once` then leaves these jobs out of its round."""
        jobs = [j for j in self.scheduler.jobs.values() if j.origin == KEY_JOB]
        if not jobs:
            return
        tasks = {asyncio.ensure_future(self._run_job(job)): job for job in jobs}
        await asyncio.wait(set(tasks))
        for task, job in tasks.items():
            self._finish(job, task, requeue=False)

    def _has_own_key(self, player_id: int) -> bool:
        return any(k.owner == str(player_id) and k.state != "disabled" for k in self.pool.keys)

    @staticmethod
    def owner_of(key: ApiKey) -> Owner | None:
        """Whose key this is, as far as known: the owner (a player id) and the owner's faction."""
        player = int(key.owner) if key.owner.isdigit() and int(key.owner) > 0 else None
        faction = int(key.faction) if key.faction and key.faction.isdigit() and int(key.faction) > 0 else None
        return Owner(player_id=player, faction_id=faction) if player or faction else None

    def _learned(self, key: ApiKey, body: Any) -> None:
        """Take the owner and faction a /v2/key/info answer names for `key`."""
        if isinstance(body, msgspec.Raw):
            try:
                body = msgspec.json.decode(body)
            except msgspec.DecodeError:
                return
        info = body.get("info") if isinstance(body, dict) else None
        user = info.get("user") if isinstance(info, dict) else None
        if not isinstance(user, dict):
            log.warning("key %s: /v2/key/info named no user; keeping the configured owner", key.fp)
            return
        player, faction = user.get("id"), user.get("faction_id")
        if type(player) is int and player > 0 and str(player) != key.owner:
            log.warning("key %s: the config says its owner is %s, the API says %d: using %d", key.fp, key.owner,
                        player, player)
            self.pool.set_owner(key, str(player))
        known = str(faction) if type(faction) is int and faction > 0 else None
        if known != key.faction and (faction is None or known is not None):
            if key.faction is not None:
                log.warning("key %s: owner's faction is %s now (was %s)", key.fp, known or "none", key.faction)
            key.faction = known

    async def close(self) -> None:
        try:
            await self.flush(final=True)
        finally:
            await self.client.close()

    def stop(self) -> None:
        """Ask the loop to stop: no new polls; requests in flight get `stop_grace` seconds; then the last
        batch is flushed. Safe to call from a signal handler."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    # ------------------------------------------------------------------ public entry points
    async def run_once(self, *, flush: bool = True) -> CollectReport:
        """One round: poll every target once (members learned on the way included), flush, return.

        With `flush=False` the round's responses stay pending until the config's `batch` or `flush_every`
        says to store them (or `flush()`/`close()`), so a caller driving rounds itself can store several
        rounds per transaction."""
        await self.start()
        await self._loop(once=True, flush_at_end=flush)
        return self._final_report()

    async def run_forever(self) -> CollectReport:
        """Poll on schedule until stop(); flush what is in hand; return the report."""
        await self.start()
        await self._loop(once=False)
        return self._final_report()

    def request_now(self, target: str) -> asyncio.Future:
        """Poll `target` ('faction:9420', 'user:123', 'torn', ...) ahead of every background poll.

        The future resolves to the responses once they are committed; the loop (run_forever) must be
        running. Unknown user:/faction: targets get a one-off poll of their default selections."""
        jobs = self.scheduler.request_now(target)
        future = asyncio.get_running_loop().create_future()
        self._ondemand.append(_OnDemand(future, jobs))
        if self._wake is not None:
            self._wake.set()
        return future

    # ------------------------------------------------------------------ the loop
    async def _loop(self, once: bool, flush_at_end: bool = True) -> None:
        if self._running:
            raise RuntimeError("the collector is already running")
        wake_event = self._wake
        if wake_event is None:
            raise RuntimeError("the collector is not started")
        self._running = True
        self._stopping = False
        self._once = once
        now = self.monotonic()
        self.scheduler.start(now, spread=not once)
        tasks: dict[asyncio.Future[Poll], Job] = {}
        wake: asyncio.Future | None = None  # waits for stop() or request_now(); kept until it fires
        try:
            while True:
                now = self.monotonic()
                if not self._stopping:
                    while len(tasks) < self.config.concurrency:
                        job = self.scheduler.pop_any(now) if once else self.scheduler.pop_due(now)
                        if job is None:
                            break
                        tasks[asyncio.create_task(self._run_job(job))] = job
                if self._stopping or (once and not tasks):
                    break
                await self._maybe_flush()
                waiters: set[asyncio.Future] = set(tasks)
                if wake is None:
                    wake = asyncio.ensure_future(wake_event.wait())
                waiters.add(wake)
                timer = None
                delay = self._timer_delay(once, len(tasks))
                if delay is not None:
                    timer = asyncio.ensure_future(self.sleep(delay))
                    waiters.add(timer)
                try:
                    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if timer is not None and not timer.done():
                        timer.cancel()
                if wake.done():
                    wake = None
                    wake_event.clear()
                for task in done:
                    job = tasks.pop(task, None)
                    if job is not None:
                        self._finish(job, task, requeue=not once)
                if self._ready:
                    await self.flush()
        finally:
            if wake is not None and not wake.done():
                wake.cancel()
            if tasks:
                done, still = await asyncio.wait(set(tasks), timeout=self.stop_grace)
                for task in still:
                    task.cancel()
                if still:
                    await asyncio.wait(still)
                for task, job in tasks.items():
                    self._finish(job, task, requeue=False)
            try:
                if flush_at_end:
                    await self.flush(final=not once)
                else:
                    await self._maybe_flush()
            finally:
                for waiter in self._ondemand + self._ready:
                    if not waiter.future.done():
                        waiter.future.set_result(waiter.responses)
                self._ondemand, self._ready = [], []
                self._running = False

    def _timer_delay(self, once: bool, inflight: int) -> float | None:
        now = self.monotonic()
        delays = []
        if not once and inflight < self.config.concurrency:
            due = self.scheduler.next_due()
            if due is not None:
                delays.append(max(0.0, due - now))
        if (self._pending or self._pending_gaps) and not once:
            # (--once flushes as polls finish and at the end: no timer racing an injected clock.)
            delays.append(max(0.0, self._last_flush + self.config.flush_every - now))
        if not once and self.on_tick is not None and inflight == 0:
            delays.append(self.tick_every)
        return min(delays) if delays else None

    def _finish(self, job: Job, task: asyncio.Future[Poll], requeue: bool) -> None:
        now = self.monotonic()
        responses: list[Response]
        if task.cancelled():
            outcome, responses, not_before = ABORTED, [], None
        elif task.exception() is not None:
            exc = task.exception()
            log.error("poll of %s failed unexpectedly: %s", job.target, scrub(f"{type(exc).__name__}: {exc}",
                                                                              self.secrets))
            outcome, responses, not_before = FAILED, [], None
        else:
            outcome, responses, not_before = task.result()
        if job.origin != KEY_JOB:  # /v2/key/info is no poll of a target (its requests and gaps still count)
            self.report.polls += 1
            if outcome == OK:
                self.report.polls_ok += 1
            elif outcome == DEFERRED:
                self.report.deferred += 1
            elif outcome != ABORTED:
                self.report.polls_failed += 1
        self.scheduler.done(job, outcome, now, requeue=requeue, not_before=not_before)
        if job.origin == KEY_JOB:
            job.held_until = job.due  # `collect --once` rounds leave it out until it is due again
        if job.origin == "ondemand":
            for waiter in list(self._ondemand):
                if any(j is job for j in waiter.jobs):
                    waiter.jobs = [j for j in waiter.jobs if j is not job]
                    waiter.responses += responses
                    if not waiter.jobs:
                        self._ondemand.remove(waiter)
                        self._ready.append(waiter)

    # ------------------------------------------------------------------ one poll
    async def _run_job(self, job: Job) -> Poll:
        request: ApiRequest | None = job.request
        responses: list[Response] = []
        outcome, not_before = OK, None
        pages = 0
        while request is not None:
            outcome, result, not_before, key = await self._fetch(job, request)
            if result is None or key is None:
                break
            if job.origin == KEY_JOB:
                self._learned(key, result.body)
                break
            response = Response(url=result.url, observed_at=result.observed_at, body=result.body,
                                owner=self.owner_of(key), key=key.fp)
            responses.append(response)
            self._pending.append(response)
            pages += 1
            if not job.paged or self._stopping:
                break
            request = self.client.next_page(request, result.body)
            if request is not None and pages >= self.max_pages:
                self._gap(result.observed_at, request.url(self.client.base), job.target, None,
                          f"stopped after {pages} pages, the most a poll follows: the rest of the list was not asked")
                log.warning("%s: %s has more than %d pages; the rest was not asked", job.target,
                            job.request.path, pages)
                break
        if outcome == OK and job.members_of and responses:
            ids = sorted({i for r in responses for i in member_ids(r.body)})
            added, removed = self.scheduler.update_members(job.members_of, ids, self.monotonic(),
                                                           spread=not self._once)
            if added or removed:
                log.info("faction %s: %d member(s) to poll added, %d removed", job.members_of,
                         len({j.target for j in added}), len(removed))
        return outcome, responses, not_before

    async def _fetch(self, job: Job, request: ApiRequest
                     ) -> tuple[str, FetchResult | None, float | None, ApiKey | None]:
        """One request with its retries. Returns (outcome, result or None, not_before for DEFERRED, the key
        that got the result)."""
        tries = 0
        exclude: set[str] = set()
        url = request.url(self.client.base)
        while True:
            if self._stopping and tries:
                return ABORTED, None, None, None
            tries += 1
            if tries > 1:
                self.report.retries += 1
            try:
                key = await self.pool.acquire(request.access, request.own_id, request.category or None, exclude,
                                              deadline=self.pool.monotonic() + self.max_wait,
                                              own_faction=request.own_faction,
                                              key_fp=request.key_fp)
            except NoUsableKey as exc:
                self._gap(int(self.clock()), url, job.target, None, str(exc))
                return DENIED, None, None, None
            except KeysBusy as exc:
                self._gap(int(self.clock()), url, job.target, None, f"not polled: {exc}")
                return DEFERRED, None, exc.free_at, None
            try:
                result = await self.client.fetch(request, key.secret)
            except BaseException:
                self.pool.released(key)
                raise
            self.report.requests += 1
            if result.failure is not None:  # (not result.ok)
                self.pool.released(key)
                self.report.failures[_failure_kind(result.failure)] += 1
                self._gap(result.observed_at, url, job.target, None, result.failure)
                if result.retryable and tries < self.config.max_tries:
                    await self._backoff(tries)
                    continue
                return FAILED, None, None, None
            body = result.body
            if isinstance(body, str):
                # Not JSON (an HTML page, a cut body): ingest quarantines it; the poll is a gap and is retried.
                self.pool.released(key)
                if job.origin != KEY_JOB:
                    self._pending.append(Response(url=result.url, observed_at=result.observed_at, body=body,
                                                  owner=self.owner_of(key), key=key.fp))
                self.report.failures["body not JSON"] += 1
                self._gap(result.observed_at, url, job.target, None, "body is not JSON (quarantined)")
                if tries < self.config.max_tries:
                    await self._backoff(tries)
                    continue
                return FAILED, None, None, None
            err = torn_error(body)
            if err is None:
                self.pool.succeeded(key, request.category or None)
                return OK, result, None, key
            code, text = err
            self.report.errors[code] += 1
            action = policy(code)
            if action == OTHER_VERSION and (code == 22) != (request.version == "v2"):
                action = P_BUG  # "only in v2" said of a v2 request (or v1 of v1): nothing to switch to
            switched: ApiRequest | None = None
            note = ""
            if action == OTHER_VERSION:
                switched = self._other_version(job, request, code)
                note = (f"; asking {switched.url(self.client.base)} instead" if switched is not None else
                        f"; the collector has no API {'v1' if code == 22 else 'v2'} form of it, not retried")
            self._gap(result.observed_at, url, job.target, code,
                      f"Torn API error {code}: {scrub(text, self.secrets)[:200]} (key {key.fp}){note}")
            self.pool.failed(key, code, request.category or None)
            if code == 14 and self._split_cloud(job, request):
                request, url = job.request, job.request.url(self.client.base)
            if action == RETRY:
                if tries < self.config.max_tries:
                    if code == 11:
                        await self.sleep(KEY_COOLDOWN)  # once per 60 s: an earlier retry meets 11 again
                    else:
                        await self._backoff(tries)
                    continue
                return FAILED, None, None, None
            if action == RETRY_OTHER_KEY:
                # The pool has paused, blocked or disabled the key; acquire picks another or waits. A key
                # taken out of use (2, 10, 13, 18) says nothing of the request: that try is not counted
                # (each key can be taken out once, so this ends).
                if code in (2, 10, 13, 18) and key.state != "active":
                    tries -= 1
                if tries < self.config.max_tries:
                    continue
                return FAILED, None, None, None
            if action == PAUSE_ALL:
                return FAILED, None, None, None
            if action == TARGET:
                self._problem(job.target, code, result.observed_at)
                if code == 6:
                    return NOT_FOUND, None, None, None
                exclude.add(key.fp)  # 7, 16: this key may not ask; another key (of a member) might
                if tries < self.config.max_tries and self.pool.candidates(
                        request.access, request.own_id, exclude, request.own_faction, request.key_fp):
                    continue
                return DENIED, None, None, None
            if action == OTHER_VERSION:
                if switched is not None and tries < self.config.max_tries:
                    request, url = switched, switched.url(self.client.base)
                    continue
                if switched is None:
                    log.warning("%s: Torn API error %d on %s: only in API %s, which the collector cannot ask "
                                "for this; not retried", job.target, code, url, "v1" if code == 22 else "v2")
                return BUG, None, None, None
            if action == P_BUG:
                log.warning("%s: Torn API error %d on %s: the request is wrong or unsupported; not retried",
                            job.target, code, url)
                return BUG, None, None, None
            log.warning("%s: unknown Torn API error code %d on %s; backing off", job.target, code, url)
            return UNKNOWN, None, None, None

    def _other_version(self, job: Job, request: ApiRequest, code: int) -> ApiRequest | None:
        """After 22/23: the job asks the other API version from now on (a combined request whose
        selections are not all there is split into single ones first). The request to try now, or None."""
        bundle = job.bundle
        if bundle is None or job.switched or request is not job.request:
            return None
        alternative = endpoints.alternative(bundle, code)
        if alternative is not None:
            job.switched = True
            self.scheduler.replace(job, alternative, self.monotonic())
            log.warning("%s: %s is only in API %s (%d): asking %s from now on", job.target, request.path,
                        "v1" if code == 22 else "v2", code, job.request.url(self.client.base))
            return job.request
        if len(bundle.specs) > 1:
            # Which selection is it? Ask each alone; the one answered 22/23 again switches by itself.
            singles = [Bundle(bundle.section, bundle.entity_id, bundle.form, (spec,)) for spec in bundle.specs]
            self.scheduler.replace(job, singles, self.monotonic())
            log.warning("%s: %s answered %d: asking its selections one by one", job.target, request.path, code)
            return job.request
        return None

    def _split_cloud(self, job: Job, request: ApiRequest) -> bool:
        """After 14 (daily read limit of a cloud category): a combined request that also asks other
        selections is split, so they are not held back with the blocked category. True if it was."""
        bundle = job.bundle
        if bundle is None or request is not job.request or len(bundle.specs) < 2:
            return False
        cloud = [s for s in bundle.specs if endpoints.cloud_categories([s.selection])]
        rest = [s for s in bundle.specs if s not in cloud]
        if not (cloud and rest):
            return False
        parts = endpoints.bundles(bundle.section, bundle.entity_id, rest)
        parts += endpoints.bundles(bundle.section, bundle.entity_id, cloud)
        self.scheduler.replace(job, parts, self.monotonic())
        log.info("%s: daily read limit (14): %s polled apart from the rest from now on", job.target,
                 ",".join(s.selection for s in cloud))
        return True

    async def _backoff(self, tries: int) -> None:
        delay = min(self.backoff_cap, self.backoff_base * 2 ** (tries - 1))
        await self.sleep(delay * self.rng.uniform(0.5, 1.0))

    def _gap(self, observed_at: int, url: str, target: str | None, code: int | None, reason: str) -> None:
        gap = Gap(int(observed_at), url, target, code, scrub(reason, self.secrets))
        self.gaps.append(gap)
        self._pending_gaps.append(gap)
        self.report.gaps += 1
        log.info("gap %s %s: %s", target or "-", url, gap.reason)

    def _problem(self, target: str, code: int, observed_at: int) -> None:
        if (target, code) not in self._known_problems:
            self._known_problems.add((target, code))
            what = "does not exist (6)" if code == 6 else f"is not visible to our keys ({code})"
            log.warning("target %s %s", target, what)
        self._pending_problems.append(TargetProblem(target, code, int(observed_at)))

    # ------------------------------------------------------------------ flushing
    async def _maybe_flush(self) -> None:
        now = self.clock()
        due = self.monotonic() - self._last_flush >= self.config.flush_every
        if len(self._pending) >= self.config.batch or ((self._pending or self._pending_gaps) and due):
            await self.flush()
        elif self.on_tick is not None and (self._last_tick is None or now - self._last_tick >= self.tick_every):
            await self._tick(now)

    async def flush(self, final: bool = False) -> None:
        """Hand pending responses to the sink, save gaps, key state and target problems; then tick.

        Key use counts are saved when `final` or when `usage_every` seconds have passed since they
        last were."""
        async with self._flush_lock:
            batch, self._pending = self._pending, []
            gaps, self._pending_gaps = self._pending_gaps, []
            problems, self._pending_problems = self._pending_problems, []
            ready, self._ready = self._ready, []
            self._last_flush = self.monotonic()
            stored = 0
            try:
                size = max(1, self.config.batch)
                while stored < len(batch):
                    chunk = batch[stored:stored + size]
                    result = await self.sink(chunk)
                    stored += len(chunk)
                    self.report.responses += len(chunk)
                    if result is not None:
                        self.report.appended += result.appended
                        self.report.unchanged += result.unchanged
                        self.report.rejected += len(result.rejected)
                now = self.clock()
                usage = final or now - self._usage_saved >= self.usage_every
                key_rows = self.pool.dirty_rows(usage=usage)
                owner_rows = self.pool.owner_rows() if self.run_db is not None else []
                if usage:
                    self._usage_saved = now
                if self.run_db is not None and (gaps or key_rows or problems or owner_rows):
                    try:
                        await self.run_db(gapstore.persist, gaps, key_rows, problems, owner_rows)
                    except STORE_FAILURES as exc:
                        # The database cannot take them right now (locked, full): kept for the next flush,
                        # and collection goes on (the sink spools responses meanwhile; see spool.py).
                        self.pool.save_failed(key_rows)
                        self._usage_saved = float("-inf")
                        self._pending_gaps[:0] = gaps
                        self._pending_problems[:0] = problems
                        gaps, problems = [], []
                        if not self._store_down:
                            log.warning("could not save gaps and key state (kept for later): %s",
                                        scrub(f"{type(exc).__name__}: {exc}", self.secrets))
                        self._store_down = True
                    except BaseException:
                        self.pool.save_failed(key_rows)  # saved next time
                        self._usage_saved = float("-inf")
                        raise
                    else:
                        self._store_down = False
            except BaseException as exc:
                # Keep what was not stored for the next flush (the final one runs when the loop ends).
                self._pending[:0] = batch[stored:]
                self._pending_gaps[:0] = gaps
                self._pending_problems[:0] = problems
                self._ready[:0] = ready
                log.error("could not store %d responses: %s", len(batch) - stored,
                          scrub(f"{type(exc).__name__}: {exc}", self.secrets))
                raise
            for waiter in ready:
                if not waiter.future.done():
                    waiter.future.set_result(waiter.responses)
        if self.on_tick is not None and (batch or gaps):
            await self._tick(self.clock())

    async def _tick(self, now: float) -> None:
        self._last_tick = now
        if self.on_tick is None:
            return
        try:
            result = self.on_tick(now)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a failing hook must not stop collection
            log.error("on_tick hook failed: %s", scrub(f"{type(exc).__name__}: {exc}", self.secrets))

    def _final_report(self) -> CollectReport:
        self.report.keys = self.pool.summary()
        return self.report


def _failure_kind(failure: str | None) -> str:
    if not failure:
        return "unknown"
    if failure.startswith("connection error"):
        return "connection error"
    if failure.startswith("body too large"):
        return "body too large"
    return failure
