"""What to poll and when: jobs built from the config, a due-time queue, and an on-demand queue ahead of it.

A `Job` is one request template polled every `interval` seconds (± jitter) for one target:

  * v2 items are one job each (`/v2/faction/9420/members`); paged v2 lists follow `_metadata.links.next`;
  * v1 items of one entity are merged into one job (`faction/9420?selections=basic,chain`), across config
    sections too (`[wars]` and `[[territories]] all = true` share `torn/?selections=...`);
  * own-only player selections go out with that player's key (`own_id`);
  * a faction with `members = true` gets member jobs as its member list arrives (`update_members`);
    players that leave the faction are dropped unless configured on their own.

`request_now(target)` puts a target's jobs on the on-demand queue, which is always served before any
background poll. After a poll, `done(job, outcome)` sets its next due time: the interval after success
or a transient failure, a long pause (`rare`) after "not found", permission and bug errors, and an
exponential backoff after unknown errors.
"""
from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from .client import ApiRequest
from .config import CollectConfig, FetchSpec
from .keypool import ACCESS_LEVELS

OK = "ok"
FAILED = "failed"           # transient failure (retries exhausted): next poll at the usual interval
NOT_FOUND = "not_found"     # code 6
DENIED = "denied"           # codes 7, 16, or no key that may ask
BUG = "bug"                 # codes 1, 3, 4, 21-23, ...: our request is wrong or unsupported
UNKNOWN = "unknown"         # an error code we do not know
DEFERRED = "deferred"       # no key free for a while (pauses, limits): polled when one is
ABORTED = "aborted"         # the collector stopped during the poll

RARE_NOT_FOUND = 86400.0    # a target the API says does not exist: once a day
RARE_DENIED = 6 * 3600.0    # a permission problem or an unsupported selection: every 6 hours


@dataclass
class Job:
    target: str                         # e.g. faction:9420, user:2491575, torn, territory:AAC,CAA
    request: ApiRequest
    interval: float
    paged: bool = False
    members_of: int | None = None       # faction id whose member list this job's response carries
    origin: str = "config"              # config | member:<faction id> | ondemand
    due: float = 0.0
    failures: int = 0
    last_outcome: str | None = None
    held_until: float = 0.0             # set by hold(): `collect --once` skips a held job
    id: int = field(default=0)

    def describe(self, base: str = "") -> str:
        return self.request.url(base) if base else self.request.path


def _v2_request(section: str, entity_id: int | str, spec: FetchSpec, target: str) -> ApiRequest:
    access = ACCESS_LEVELS[spec.access]
    if spec.own:
        # Own-only v2 selections have no {id} path (/v2/user/battlestats): the key says whose they are;
        # ?id= names the player for routing and the gaps.
        params = tuple(spec.params) + (("id", str(entity_id)),)
        return ApiRequest(f"v2/{section}/{spec.selection}", params, access, str(entity_id), target,
                          spec.selection)
    return ApiRequest(f"v2/{section}/{entity_id}/{spec.selection}", tuple(spec.params), access, None, target,
                      spec.selection)


def _v1_request(section: str, entity: str, specs: list[FetchSpec], target: str,
                own_id: str | None = None) -> ApiRequest:
    selections = ",".join(dict.fromkeys(s.selection for s in specs))
    access = max((ACCESS_LEVELS[s.access] for s in specs), default=0)
    own = own_id if any(s.own for s in specs) else None
    path = f"{section}/{entity}" if entity else f"{section}/"
    return ApiRequest(path, (("selections", selections),), access, own, target, selections)


def player_jobs(player_id: int, fetch: list[FetchSpec], interval: float, origin: str = "config") -> list[Job]:
    target = f"user:{player_id}"
    jobs = [Job(target, _v2_request("user", player_id, s, target), interval, origin=origin)
            for s in fetch if s.version == "v2"]
    v1 = [s for s in fetch if s.version == "v1"]
    if v1:
        jobs.append(Job(target, _v1_request("user", str(player_id), v1, target, str(player_id)), interval,
                        origin=origin))
    return jobs


def faction_jobs(faction_id: int, fetch: list[FetchSpec], interval: float, members: bool) -> list[Job]:
    target = f"faction:{faction_id}"
    jobs = []
    for spec in fetch:
        if spec.version == "v2":
            job = Job(target, _v2_request("faction", faction_id, spec, target), interval)
            if spec.selection == "members" and members:
                job.members_of = faction_id
            # Whole lists are followed page by page; history lists (rankedwars, attacks, news) are not:
            # their first page holds the newest entries, and walking all history every poll would be a storm.
            if spec.selection in ("territoryownership", "territory"):
                job.paged = True
            jobs.append(job)
    v1 = [s for s in fetch if s.version == "v1"]
    if v1:
        job = Job(target, _v1_request("faction", str(faction_id), v1, target), interval)
        if members and any(s.selection in ("basic", "members") for s in v1):
            job.members_of = faction_id
        jobs.append(job)
    if members and not any(j.members_of for j in jobs):
        jobs.append(Job(target, _v2_request("faction", faction_id, FetchSpec("v2", "members"), target),
                        interval, members_of=faction_id))
    return jobs


def build_jobs(config: CollectConfig) -> list[Job]:
    """Every background job the config asks for, with v1 requests of one entity merged."""
    jobs: list[Job] = []
    for faction in config.factions:
        jobs += faction_jobs(faction.id, faction.fetch, faction.interval, faction.members)
    for player in config.players:
        jobs += player_jobs(player.id, player.fetch, player.interval)
    for terr in config.territories:
        if terr.api == "v1":
            entity = ",".join(terr.ids) if terr.ids else ""
            target = f"territory:{entity}" if entity else "torn"
            jobs.append(Job(target, ApiRequest(f"torn/{entity}", (("selections", "territory"),), 0, None, target,
                                               "territory"), terr.interval))
        else:
            params = (("ids", ",".join(terr.ids)),) if terr.ids else ()
            target = f"territory:{','.join(terr.ids)}" if terr.ids else "torn"
            jobs.append(Job(target, ApiRequest("v2/torn/territory", params + (("limit", "250"),), 0, None, target,
                                               "territory"), terr.interval, paged=True))
            if not terr.ids:
                jobs.append(Job("torn", ApiRequest("v2/faction/territoryownership", (("limit", "500"),), 0, None,
                                                   "torn", "territoryownership"), terr.interval, paged=True))
    if config.wars:
        selections = [name for name, on in (("rankedwars", config.wars.ranked),
                                            ("territorywars", config.wars.territory),
                                            ("rackets", config.wars.rackets)) if on]
        if selections:
            jobs.append(Job("torn", ApiRequest("torn/", (("selections", ",".join(selections)),), 0, None, "torn",
                                               ",".join(selections)), config.wars.interval))
    return merge_v1(jobs)


def merge_v1(jobs: Iterable[Job]) -> list[Job]:
    """Merge v1 jobs asking the same entity (same path, same own key) into one request."""
    out: list[Job] = []
    by_entity: dict[tuple, Job] = {}
    for job in jobs:
        req = job.request
        if req.version != "v1" or job.paged:
            out.append(job)
            continue
        ident = (req.path, req.own_id)
        first = by_entity.get(ident)
        if first is None:
            by_entity[ident] = job
            out.append(job)
            continue
        sels = dict.fromkeys(_selections(first.request) + _selections(req))
        selections = ",".join(sels)
        first.request = ApiRequest(req.path, (("selections", selections),), max(first.request.access, req.access),
                                   first.request.own_id, first.target, selections)
        first.interval = min(first.interval, job.interval)
        first.members_of = first.members_of or job.members_of
    return out


def _selections(req: ApiRequest) -> list[str]:
    return [s for p, v in req.params if p == "selections" for s in v.split(",") if s]


class Scheduler:
    """Jobs, their due times, and the on-demand queue. Times come from the caller (the collector's clock)."""

    def __init__(self, jobs: Iterable[Job], *, jitter: float = 0.1, rng: random.Random | None = None,
                 member_fetch: dict[int, tuple[list[FetchSpec], float]] | None = None):
        self.jitter = jitter
        self.rng = rng or random.Random()
        self._ids = itertools.count(1)
        self.jobs: dict[int, Job] = {}
        self._heap: list[tuple[float, int]] = []
        self._ondemand: deque[Job] = deque()
        self.member_fetch = member_fetch or {}
        self.members: dict[int, set[int]] = {}           # faction id -> member ids polled
        self.configured_targets = set()
        for job in jobs:
            self._add(job)
            self.configured_targets.add(job.target)

    def _add(self, job: Job) -> Job:
        job.id = next(self._ids)
        self.jobs[job.id] = job
        return job

    # ------------------------------------------------------------------ queueing
    def start(self, now: float, spread: bool = True) -> None:
        """Queue every job: due now, or spread over the first `jitter` part of its interval."""
        self._heap = []
        for job in self.jobs.values():
            offset = self.rng.uniform(0, job.interval * self.jitter) if spread and self.jitter else 0.0
            job.due = max(job.due, now + offset) if job.due else now + offset
            heapq.heappush(self._heap, (job.due, job.id))

    def hold(self, target: str, until: float) -> None:
        """Poll nothing for `target` before `until` (e.g. a target the API said does not exist)."""
        for job in self.jobs.values():
            if job.target == target and job.due < until:
                job.due = until
                job.held_until = until
        self._heap = [(self.jobs[i].due, i) for _, i in self._heap if i in self.jobs]
        heapq.heapify(self._heap)

    def pop_due(self, now: float) -> Job | None:
        """The next job to poll now: on-demand first, then the most overdue background job."""
        if self._ondemand:
            return self._ondemand.popleft()
        while self._heap and self._heap[0][0] <= now:
            due, job_id = heapq.heappop(self._heap)
            job = self.jobs.get(job_id)
            if job is not None and job.due == due:
                return job
        return None

    def pop_any(self, now: float) -> Job | None:
        """The next job regardless of its due time (one round over everything: `collect --once`);
        jobs held past `now` (a target known not to exist) are left out."""
        if self._ondemand:
            return self._ondemand.popleft()
        while self._heap:
            due, job_id = heapq.heappop(self._heap)
            job = self.jobs.get(job_id)
            if job is not None and job.due == due and job.held_until <= now:
                return job
        return None

    def next_due(self) -> float | None:
        if self._ondemand:
            return 0.0
        while self._heap and (self._heap[0][1] not in self.jobs or self.jobs[self._heap[0][1]].due != self._heap[0][0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        return len(self._ondemand) + len(self._heap)

    def done(self, job: Job, outcome: str, now: float, requeue: bool = True,
             not_before: float | None = None) -> None:
        """Record a poll's outcome and queue the job's next poll (DEFERRED: at `not_before`)."""
        job.last_outcome = outcome
        if job.origin == "ondemand" or job.id not in self.jobs:
            return
        if outcome == DEFERRED and not_before is not None:
            job.due = max(now, not_before)
            if requeue:
                heapq.heappush(self._heap, (job.due, job.id))
            return
        if outcome in (OK, FAILED, ABORTED, DEFERRED):
            job.failures = 0 if outcome == OK else job.failures + 1
            delay = job.interval
        elif outcome == NOT_FOUND:
            delay = max(job.interval, RARE_NOT_FOUND)
        elif outcome in (DENIED, BUG):
            delay = max(job.interval, RARE_DENIED)
        else:
            job.failures += 1
            delay = min(job.interval * 2 ** job.failures, RARE_DENIED)
        if self.jitter:
            delay *= 1 + self.rng.uniform(-self.jitter, self.jitter)
        job.due = now + delay
        if requeue:
            heapq.heappush(self._heap, (job.due, job.id))

    # ------------------------------------------------------------------ on demand
    def request_now(self, target: str, default_fetch: dict[str, list[FetchSpec]] | None = None) -> list[Job]:
        """Queue one poll of each of a target's jobs ahead of everything else; returns the queued copies.

        A target with no configured job ('user:123', 'faction:9420') gets a one-off poll of its default
        selections (profile for a user; basic and members for a faction)."""
        templates = [j for j in self.jobs.values() if j.target == target]
        if not templates:
            templates = self._adhoc(target, default_fetch or {})
        copies = []
        for job in templates:
            copy = Job(job.target, job.request, job.interval, job.paged, job.members_of, "ondemand")
            copies.append(copy)
            self._ondemand.append(copy)
        return copies

    def _adhoc(self, target: str, default_fetch: dict[str, list[FetchSpec]]) -> list[Job]:
        kind, _, ident = target.partition(":")
        if not ident.isdigit() or int(ident) <= 0:
            raise ValueError(f"no job for {target!r}: name a configured target, user:<id> or faction:<id>")
        if kind == "user":
            return player_jobs(int(ident), default_fetch.get("user") or [FetchSpec("v2", "profile")], 0.0, "ondemand")
        if kind == "faction":
            return faction_jobs(int(ident), default_fetch.get("faction") or
                                [FetchSpec("v2", "basic"), FetchSpec("v2", "members")], 0.0, False)
        raise ValueError(f"no job for {target!r}: name a configured target, user:<id> or faction:<id>")

    # ------------------------------------------------------------------ members
    def update_members(self, faction_id: int, member_ids: Iterable[int], now: float,
                       spread: bool = True) -> tuple[list[Job], list[int]]:
        """Add jobs for new members and drop those of members who left. Returns (added jobs, removed ids)."""
        if faction_id not in self.member_fetch:
            return [], []
        fetch, interval = self.member_fetch[faction_id]
        current = set(int(i) for i in member_ids)
        before = self.members.get(faction_id, set())
        self.members[faction_id] = current
        origin = f"member:{faction_id}"
        added: list[Job] = []
        for pid in sorted(current - before):
            target = f"user:{pid}"
            if target in self.configured_targets or any(j.target == target for j in self.jobs.values()):
                continue
            for job in player_jobs(pid, fetch, interval, origin):
                self._add(job)
                offset = self.rng.uniform(0, interval * self.jitter) if spread and self.jitter else 0.0
                job.due = now + offset
                heapq.heappush(self._heap, (job.due, job.id))
                added.append(job)
        removed = sorted(before - current)
        for pid in removed:
            target = f"user:{pid}"
            for job_id in [i for i, j in self.jobs.items() if j.target == target and j.origin == origin]:
                del self.jobs[job_id]
        return added, removed


def member_ids(body) -> list[int]:
    """Member ids from a v2 members list or a v1 faction body (members keyed by id; msgspec.Raw is decoded)."""
    if isinstance(body, msgspec.Raw):
        try:
            body = msgspec.json.decode(body)
        except msgspec.DecodeError:
            return []
    if not isinstance(body, dict):
        return []
    members = body.get("members")
    out = []
    if isinstance(members, list):
        for item in members:
            if isinstance(item, dict):
                value = item.get("id")
                if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                    out.append(value)
    elif isinstance(members, dict):
        for key in members:
            if str(key).isdigit() and int(key) > 0:
                out.append(int(key))
    return sorted(set(out))
