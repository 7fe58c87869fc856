"""What to poll and when: jobs built from the config, a due-time queue, and an on-demand queue ahead of it.

A `Job` is one request template polled every `interval` seconds (± jitter) for one target:

  * v2 items of one entity are combined as the spec allows (`endpoints.bundles`):
    `/v2/faction?selections=basic,members,wars&id=9420`, `/v2/user?selections=bars,battlestats`; an item
    that combines with nothing keeps its own path (`/v2/user/123/profile`); paged v2 lists go alone and
    follow `_metadata.links.next`;
  * v1 items of one entity are merged into one job (`faction/9420?selections=basic,chain`), across config
    sections too (`[wars]` and `[[territories]] all = true` share `torn/?selections=...`);
  * own-key items go out with the key of that player (`own_id`) or of a member of that faction
    (`own_faction`); global ones (`/v2/faction/rackets`) with any key, once however many factions list them;
  * a faction with `members = true` gets member jobs as its member list arrives (`update_members`);
    players that leave the faction are dropped unless configured on their own; a member's own-key
    items are polled only for members with a key of their own (`has_own_key`);
  * `replace(job, bundles)` rebuilds a job from other bundles (a split after code 14, the other API
    version after 22/23); the first takes the job's place, the others become jobs of their own.

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgspec

from .client import ApiRequest
from .config import CollectConfig, FetchSpec
from .endpoints import PAGED, Bundle, bundles
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
    bundle: Bundle | None = None        # what the request asks (None: torn and key requests)
    switched: bool = False              # asked through the other API version already (22/23)

    def describe(self, base: str = "") -> str:
        return self.request.url(base) if base else self.request.path


def request_for(bundle: Bundle, target: str) -> ApiRequest:
    """The ApiRequest of a bundle: its spec path and query, the access it needs, whose key must ask."""
    path, params = bundle.path_and_params()
    access = max((ACCESS_LEVELS[s.access] for s in bundle.specs), default=0)
    own = bundle.form == "own" or (bundle.form == "v1" and any(s.own for s in bundle.specs))
    own_id = bundle.entity_id if own and bundle.section == "user" else None
    own_faction = bundle.entity_id if own and bundle.section == "faction" else None
    return ApiRequest(path, params, access, own_id, target, ",".join(bundle.selections), own_faction=own_faction)


def _job(bundle: Bundle, target: str, interval: float, origin: str, members_of: int | None) -> Job:
    if bundle.form == "global":
        target = "torn"
    job = Job(target, request_for(bundle, target), interval, origin=origin, bundle=bundle)
    # Whole lists are followed page by page; history lists (rankedwars, attacks, news) are not: their
    # first page holds the newest entries, and walking all history every poll would be a storm.
    job.paged = bundle.version == "v2" and any(s.selection in PAGED[bundle.section] for s in bundle.specs)
    names = set(bundle.selections)
    if members_of is not None and ("members" in names or (bundle.form == "v1" and "basic" in names)):
        job.members_of = members_of
    return job


def player_jobs(player_id: int, fetch: list[FetchSpec], interval: float, origin: str = "config",
                own_key: bool = True) -> list[Job]:
    """The jobs of one player; without `own_key` (a member with no key of their own) own-key items are left out."""
    specs = fetch if own_key else [s for s in fetch if not s.own]
    return [_job(b, f"user:{player_id}", interval, origin, None) for b in bundles("user", str(player_id), specs)]


def faction_jobs(faction_id: int, fetch: list[FetchSpec], interval: float, members: bool,
                 origin: str = "config") -> list[Job]:
    target = f"faction:{faction_id}"
    jobs = [_job(b, target, interval, origin, faction_id if members else None)
            for b in bundles("faction", str(faction_id), fetch)]
    if members and not any(j.members_of for j in jobs):
        jobs += [_job(b, target, interval, origin, faction_id)
                 for b in bundles("faction", str(faction_id), [FetchSpec("v2", "members")])]
    return jobs


def build_jobs(config: CollectConfig) -> list[Job]:
    """Every background job the config asks for, with v1 requests of one entity merged.

    The world's data (territories, wars) comes first in a round, then factions, then players."""
    jobs: list[Job] = []
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
    for faction in config.factions:
        jobs += faction_jobs(faction.id, faction.fetch, faction.interval, faction.members)
    for player in config.players:
        jobs += player_jobs(player.id, player.fetch, player.interval)
    return merge_v1(_unique(jobs))


def _unique(jobs: list[Job]) -> list[Job]:
    """One job per request: a global selection listed by several factions, the territory ownership list
    asked by [[territories]] and a faction alike."""
    seen: dict[tuple, Job] = {}
    out = []
    for job in jobs:
        req = job.request
        ident = (req.path, req.params, req.own_id, req.own_faction)
        first = seen.get(ident)
        if first is None:
            seen[ident] = job
            out.append(job)
        else:
            first.interval = min(first.interval, job.interval)
            first.members_of = first.members_of or job.members_of
    return out


def merge_v1(jobs: Iterable[Job]) -> list[Job]:
    """Merge v1 jobs asking the same entity (same path, same own key) into one request."""
    out: list[Job] = []
    by_entity: dict[tuple, Job] = {}
    for job in jobs:
        req = job.request
        if req.version != "v1" or job.paged:
            out.append(job)
            continue
        ident = (req.path, req.own_id, req.own_faction)
        first = by_entity.get(ident)
        if first is None:
            by_entity[ident] = job
            out.append(job)
            continue
        sels = dict.fromkeys(_selections(first.request) + _selections(req))
        selections = ",".join(sels)
        first.request = ApiRequest(req.path, (("selections", selections),), max(first.request.access, req.access),
                                   first.request.own_id, first.target, selections,
                                   own_faction=first.request.own_faction)
        if first.bundle is not None and job.bundle is not None:
            first.bundle = Bundle(first.bundle.section, first.bundle.entity_id, "v1",
                                  tuple(dict.fromkeys(first.bundle.specs + job.bundle.specs)))
        first.interval = min(first.interval, job.interval)
        first.members_of = first.members_of or job.members_of
    return out


def _selections(req: ApiRequest) -> list[str]:
    return [s for p, v in req.params if p == "selections" for s in v.split(",") if s]


class Scheduler:
    """Jobs, their due times, and the on-demand queue. Times come from the caller (the collector's monotonic
    clock: a wall clock set back does not hold the jobs)."""

    def __init__(self, jobs: Iterable[Job], *, jitter: float = 0.1, rng: random.Random | None = None,
                 member_fetch: dict[int, tuple[list[FetchSpec], float]] | None = None,
                 has_own_key: Callable[[int], bool] | None = None):
        self.jitter = jitter
        self.has_own_key = has_own_key or (lambda _player: True)
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

    def add(self, job: Job, due: float) -> Job:
        """A new background job, due at `due`."""
        self._add(job)
        job.due = due
        heapq.heappush(self._heap, (job.due, job.id))
        return job

    def replace(self, job: Job, new: list[Bundle], now: float) -> list[Job]:
        """Ask what `job` asked through other bundles: the first takes the job's place (same id, due time
        and outcome handling), the others become jobs of their own, due now. Returns the added jobs."""
        first, *rest = new
        job.bundle = first
        job.request = request_for(first, job.target)
        added = []
        for bundle in rest:
            extra = _job(bundle, job.target, job.interval, job.origin, job.members_of)
            extra.switched = job.switched
            if job.origin == "ondemand" or job.id not in self.jobs:
                continue  # a one-off poll: only the part in hand is asked
            added.append(self.add(extra, now))
        return added

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
            copy = Job(job.target, job.request, job.interval, job.paged, job.members_of, "ondemand",
                       bundle=job.bundle, switched=job.switched)
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
            for job in player_jobs(pid, fetch, interval, origin, own_key=self.has_own_key(pid)):
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
