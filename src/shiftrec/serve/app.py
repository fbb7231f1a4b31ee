"""The HTTP service (FastAPI; this module imports it, so import it only to serve): recommendations with reasons, durable live events, new items,
interests, platform migrations, health, Prometheus metrics, and a hot reload of the run.

`create_app(Service(...))` builds the app; `shiftrec serve RUN_DIR` runs it under uvicorn.
Writes need `Authorization: Bearer <token>` (compared in constant time) and are checked before
the body is read; bodies over `max_body` bytes get 413; every bad input is a 4xx naming the
field. `GET /` is left free (a dashboard may be mounted there).
"""

from __future__ import annotations

import hmac
import json
import math
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shiftrec.data.schema import EVENT_TYPES
from shiftrec.errors import ShiftrecError
from shiftrec.serve.recommender import MAX_K, Recommender, new_items_refused
from shiftrec.serve.recommender import Query as RecQuery
from shiftrec.serve.store import EventStore, StoredEvent, default_store_url, redact

MAX_BODY = 1 << 20  # bytes
MAX_EVENTS = 1000  # per request
MAX_HISTORY = 1000
MAX_ITEMS = 1000
TS_MIN = 788918400  # 1995-01-01
TS_MAX = 4102444800  # 2100-01-01
WRITE_PATHS = ("/v1/events", "/v1/items", "/v1/admin/reload")
LAT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# ---------------------------------------------------------------------- request/response models
def _models() -> dict[str, Any]:
    """Pydantic models (imported lazily with FastAPI)."""
    from pydantic import BaseModel, ConfigDict, Field

    Id = Annotated[str, Field(min_length=1, max_length=256)]

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    class EventIn(Strict):
        user_id: Id
        item_id: Id
        timestamp: float | Annotated[str, Field(max_length=40)] = Field(
            description="unix seconds, or ISO 8601; 1995-01-01 .. 2100-01-01")
        event_type: Annotated[str, Field(json_schema_extra={"enum": EVENT_TYPES})] = "view"
        value: Annotated[float, Field(allow_inf_nan=False)] | None = None
        event_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
        session_id: Annotated[str, Field(max_length=256)] | None = None
        domain: Annotated[str, Field(max_length=256)] | None = None

    class EventsIn(Strict):
        events: Annotated[list[Any], Field(min_length=1, max_length=MAX_EVENTS, description=(
            "events, each {user_id, item_id, timestamp (unix seconds or ISO 8601), event_type "
            f"({', '.join(EVENT_TYPES)}), optional value, event_id, session_id}}; bad ones are "
            "rejected by index, the others stored"))]

    class Rejected(BaseModel):
        index: int
        field: str
        reason: str

    class EventsOut(BaseModel):
        accepted: int
        stored: int
        duplicates: int
        rejected: list[Rejected]

    class HistoryIn(Strict):
        history: Annotated[list[Id], Field(max_length=MAX_HISTORY)]
        k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
        exclude_seen: bool = True
        explain: bool = True

    class ReasonOut(BaseModel):
        kind: str
        text: str

    class ItemOut(BaseModel):
        item_id: str
        domain: str
        title: str | None
        category: str | None
        price: float | None
        score: float
        reasons: list[ReasonOut]

    class ShiftOut(BaseModel):
        model_config = ConfigDict(populate_by_name=True)
        shifted: bool
        from_: list[str] | None = Field(alias="from")
        to: list[str] | None
        at: str | None

    class RecsOut(BaseModel):
        user_id: str | None
        model: str
        items: list[ItemOut]
        shift: ShiftOut
        cold: bool
        ignored_items: list[str]

    class NewItem(Strict):
        item_id: Id
        title: Annotated[str, Field(min_length=1, max_length=2000)]
        category: Annotated[str, Field(max_length=1000)] | None = None
        brand: Annotated[str, Field(max_length=256)] | None = None
        description: Annotated[str, Field(max_length=10000)] | None = None
        price: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None = None

    class ItemsIn(Strict):
        items: Annotated[list[NewItem], Field(min_length=1, max_length=MAX_ITEMS)]

    class ItemsOut(BaseModel):
        added: list[str]
        existing: list[str]

    class ReloadIn(Strict):
        run_dir: Annotated[str, Field(min_length=1, max_length=4096)] | None = None

    return {k: v for k, v in locals().items() if isinstance(v, type)}


M = _models()
EventIn, EventsIn, HistoryIn, ItemsIn, ReloadIn = (M[n] for n in (
    "EventIn", "EventsIn", "HistoryIn", "ItemsIn", "ReloadIn"))


def parse_ts(v: Any) -> float:
    """Unix seconds of a timestamp given as a number or ISO 8601; ValueError names why."""
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("not a number of unix seconds nor an ISO 8601 date-time") from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        v = d.timestamp()
    v = float(v)
    if not math.isfinite(v) or not TS_MIN <= v <= TS_MAX:
        raise ValueError("out of range (1995-01-01 .. 2100-01-01)")
    return v


# ---------------------------------------------------------------------- metrics
class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}
        self.lat: dict[tuple[str, str], list[float]] = {}  # bucket counts + [sum, count]
        self.events_stored = 0
        self.events_duplicate = 0
        self.events_rejected = 0
        self.events_caught_up = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.lat.get((method, route))
            if h is None:
                h = self.lat[(method, route)] = [0.0] * (len(LAT_BUCKETS) + 2)
            for i, b in enumerate(LAT_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def text(self, extra: dict[str, float]) -> str:
        out = ["# HELP shiftrec_requests_total HTTP requests by method, route and status",
               "# TYPE shiftrec_requests_total counter"]
        with self.lock:
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(f'shiftrec_requests_total{{method="{m}",route="{r}",status="{s}"}} {n}')
            out += ["# HELP shiftrec_request_seconds request latency",
                    "# TYPE shiftrec_request_seconds histogram"]
            for (m, r), h in sorted(self.lat.items()):
                lab = f'method="{m}",route="{r}"'
                for i, b in enumerate(LAT_BUCKETS):
                    out.append(f'shiftrec_request_seconds_bucket{{{lab},le="{b}"}} {int(h[i])}')
                out.append(f'shiftrec_request_seconds_bucket{{{lab},le="+Inf"}} {int(h[-1])}')
                out.append(f"shiftrec_request_seconds_sum{{{lab}}} {h[-2]:.6f}")
                out.append(f"shiftrec_request_seconds_count{{{lab}}} {int(h[-1])}")
            for name, v, help_ in (
                    ("shiftrec_events_stored_total", self.events_stored, "events stored durably"),
                    ("shiftrec_events_duplicate_total", self.events_duplicate,
                     "events already stored (idempotent retries)"),
                    ("shiftrec_events_rejected_total", self.events_rejected, "events rejected"),
                    ("shiftrec_events_caught_up_total", self.events_caught_up,
                     "events stored by other replicas, picked up from the store")):
                out += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name} {v}"]
        for name, v in extra.items():
            out += [f"# TYPE {name} gauge", f"{name} {v}"]
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- the service state
class Service:
    """A loaded run + its event store; rebuilds user state from the store on start."""

    def __init__(self, run_dir: str | Path, store_url: str | None = None, *,
                 token: str | None = None, auth_reads: bool = False, encoder: Any = None,
                 max_body: int = MAX_BODY, snapshot_dir: str | Path | None = None,
                 ann: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.ann = ann  # serve.retrieval.AnnConfig (None: mode auto)
        self.token = token
        self.auth_reads = auth_reads
        self.encoder = encoder
        self.max_body = max_body
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self.metrics = Metrics()
        self.store = EventStore(store_url or default_store_url(run_dir))
        self.write_lock = threading.Lock()  # events/items vs a reload's replay + swap
        self.started = time.time()
        self.applied_seq = 0  # every stored event with seq <= this is in self.rec
        self.snapshot_loaded: dict[str, Any] | None = None
        self.snapshot_seq = 0  # applied_seq of the latest snapshot written or loaded
        self.rec = self._load(self.run_dir, use_snapshot=True)
        self.batcher = Batcher(self)
        self.run_identity = run_identity(self.run_dir)
        self.reloads = 0

    def _load(self, run_dir: Path, use_snapshot: bool = False) -> Recommender:
        rec = Recommender.load(run_dir, encoder=self.encoder, ann=self.ann)
        self._replay(rec, use_snapshot)
        return rec

    def _replay(self, rec: Recommender, use_snapshot: bool = False) -> None:
        """Items added at run time, then the stored events in arrival order: all of them, or
        (a valid snapshot) the snapshot's user state plus the events stored after it."""
        if rec.can_add_items:
            items = self.store.items()
            if items:
                rec.add_items(items)
        start = 0
        self.snapshot_loaded = None
        if use_snapshot and self.snapshot_dir is not None:
            from shiftrec.serve.snapshot import load_snapshot

            got = load_snapshot(self.snapshot_dir, rec, self.store)
            if got is not None:
                start = int(got["seq"])
                self.snapshot_loaded = got
                self.snapshot_seq = start
        self.applied_seq = start
        self.events_replayed = self._apply_after(rec)

    def _apply_after(self, rec: Recommender) -> int:
        """Apply to `rec` every stored event after `applied_seq` (own writes and those of other
        replicas sharing the store), in seq order; returns how many were applied."""
        n, limit = 0, 50_000
        while True:
            rows = self.store.events_after(self.applied_seq, limit)
            if not rows:
                return n
            batch: list[tuple[str, int, int]] = []
            # items another replica added: the items table is read (and its new items added)
            # at the first unknown item of these rows, once; it was read after the rows, so it
            # holds every item stored before any of these events
            items_read = False
            for row in rows:
                _, _eid, user, item, _dom, ts_us, *_ = row
                idx = rec.resolve(item)
                if idx is None and rec.can_add_items and not items_read:
                    items_read = True
                    new = [it for it in self.store.items() if rec.resolve(it["item_id"]) is None]
                    if new:
                        rec.add_items(new)
                    idx = rec.resolve(item)
                if idx is not None:
                    batch.append((user, idx, ts_us // 1_000_000))
                    n += 1
            rec.observe(batch)
            self.applied_seq = int(rows[-1][0])
            if len(rows) < limit:  # the store had no more: no second, empty query
                return n

    def catch_up(self) -> int:
        """Pick up the events other replicas stored since the last look."""
        with self.write_lock:
            n = self._apply_after(self.rec)
        if n:
            with self.metrics.lock:
                self.metrics.events_caught_up += n
        return n

    def write_snapshot(self) -> Path | None:
        """Write the live user state (as of `applied_seq`) to `snapshot_dir`, when set and
        when anything changed since the last snapshot."""
        if self.snapshot_dir is None:
            return None
        from shiftrec.serve.snapshot import write_snapshot

        with self.write_lock:
            if self.applied_seq == self.snapshot_seq and self.snapshot_dir.is_dir():
                return None
            path = write_snapshot(self.snapshot_dir, self.rec, self.store, self.applied_seq)
            self.snapshot_seq = self.applied_seq
        return path

    def reload(self, run_dir: str | Path | None = None) -> dict[str, Any]:
        """Load a (retrained) run beside the serving one, replay the store into it and swap;
        requests keep being answered by the old run until the swap."""
        new_dir = Path(run_dir) if run_dir else self.run_dir
        rec = Recommender.load(new_dir, encoder=self.encoder, ann=self.ann)  # slow, no lock
        with self.write_lock:  # no event lands between the replay and the swap
            self._replay(rec, use_snapshot=False)
            self.rec, self.run_dir = rec, new_dir
            self.run_identity = run_identity(new_dir)
            self.reloads += 1
        return {"run": rec.manifest.get("name"), "model": rec.model_name,
                "run_dir": str(new_dir), "events_replayed": self.events_replayed}

    def check_token(self, header: str | None) -> bool:
        if not self.token:
            return False
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def close(self, snapshot: bool = True) -> None:
        if snapshot:
            self.write_snapshot()
        self.store.close()


class Batcher:
    """Micro-batching of recommendation requests: the requests that arrive while a batch is
    being scored are answered together by one model call (no added wait: a lone request is
    scored at once). Runs on the event loop."""

    def __init__(self, svc: Service, max_batch: int = 64) -> None:
        self.svc = svc
        self.max_batch = max_batch
        self.pending: list[tuple[RecQuery, Any]] = []
        self.scheduled = False
        self.batches = 0
        self.batched_requests = 0

    async def submit(self, q: RecQuery) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self.pending.append((q, fut))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        import asyncio

        batch, self.pending = self.pending[:self.max_batch], self.pending[self.max_batch:]
        if self.pending:
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self.scheduled = False
        rec = self.svc.rec
        self.batches += 1
        self.batched_requests += len(batch)
        try:
            answers = rec.recommend_batch([q for q, _ in batch])
        except Exception:  # noqa: BLE001 - answer each alone, so one bad query fails alone
            for q, fut in batch:
                try:
                    fut.set_result(rec.recommend_batch([q])[0])
                except Exception as e:  # noqa: BLE001
                    fut.set_exception(e)
            return
        for (_, fut), a in zip(batch, answers, strict=True):
            if not fut.done():
                fut.set_result(a)


def _err(status: int, field: str, message: str) -> Any:
    return JSONResponse({"error": f"{field}: {message}" if field else message,
                         "detail": [{"field": field, "message": message}]}, status_code=status)


def _loc(loc: Any) -> str:
    parts = [str(x) for x in loc if x not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


# ---------------------------------------------------------------------- the app
def create_app(svc: Service) -> Any:
    app = FastAPI(title="shiftrec", version="1",
                  description="Recommendations that follow interest shifts, with reasons.")
    app.state.service = svc

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> Any:
        errs = exc.errors()
        detail = [{"field": "body" if e.get("type") == "json_invalid" else _loc(e.get("loc", ())),
                   "message": str(e.get("msg", ""))[:300]} for e in errs[:20]]
        detail = detail or [{"field": "body", "message": "invalid"}]
        return JSONResponse({"error": "; ".join(f"{d['field']}: {d['message']}"
                                                for d in detail[:5]), "detail": detail},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> Any:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            return _err(400, "body", "could not read the request body")
        return JSONResponse({"error": str(exc.detail), "detail": [{"field": "",
                            "message": str(exc.detail)}]}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(ShiftrecError)
    async def _shiftrec(_req: Request, exc: ShiftrecError) -> Any:
        return _err(422 if exc.column else 400, exc.column or "", exc.message)

    # ------------------------------------------------------------------ reads
    def _recs_response(rec: Any) -> Any:
        return JSONResponse(rec.to_dict())

    @app.get("/v1/users/{user_id}/recommendations", response_model=M["RecsOut"],
             tags=["recommend"])
    async def user_recommendations(
            user_id: Annotated[str, Field_path()],
            k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
            exclude_seen: bool = True, explain: bool = True) -> Any:
        """Top-k for a user, with reasons and the user's detected shift."""
        return _recs_response(await svc.batcher.submit(RecQuery(user_id, None, k, exclude_seen,
                                                             explain)))

    @app.post("/v1/recommendations", response_model=M["RecsOut"], tags=["recommend"])
    async def anonymous_recommendations(body: HistoryIn) -> Any:
        """Top-k for an anonymous session's history of item ids (unknown ids are ignored and
        listed in `ignored_items`)."""
        return _recs_response(await svc.batcher.submit(RecQuery(
            None, list(body.history), body.k, body.exclude_seen, body.explain)))

    @app.get("/v1/users/{user_id}/interests", tags=["interest"])
    async def interests(user_id: Annotated[str, Field_path()]) -> Any:
        """The user's current topic profile and the shifts detected over time."""
        return JSONResponse(svc.rec.interests(user_id))

    @app.get("/v1/migrations", tags=["interest"])
    async def migrations(windows: Annotated[int, Query(ge=1, le=100)] = 2) -> Any:
        """Platform flows: largest topic migrations and the latest windows."""
        return JSONResponse(svc.rec.migrations(windows))

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Any:
        r = svc.rec
        return JSONResponse({"status": "ok", "run": r.manifest.get("name"), "model": r.model_name,
                             "items": r.n_items, "users": len(r._base) + 0,
                             "store": redact(svc.store.url), "uptime_s": round(
                                 time.time() - svc.started, 1), "reloads": svc.reloads,
                             "ann": {k: v for k, v in r.ann_info.items() if k != "config"}})

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Any:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return PlainTextResponse(svc.metrics.text({
            "shiftrec_process_peak_rss_bytes": rss,
            "shiftrec_catalogue_items": svc.rec.n_items,
            "shiftrec_store_commits": svc.store.commits,
            "shiftrec_recommend_batches": svc.batcher.batches,
            "shiftrec_recommend_batched_requests": svc.batcher.batched_requests}),
            media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ writes
    @app.post("/v1/events", response_model=M["EventsOut"], tags=["events"])
    def post_events(body: EventsIn, request: Request) -> Any:
        """Store events durably (committed before the answer), then update each user's
        history, topic profile and shift state. Retries are stored once: give each event an
        `event_id`, or the request an `Idempotency-Key` header."""
        key = request.headers.get("idempotency-key")
        if key is not None and not 1 <= len(key) <= 200:
            return _err(422, "Idempotency-Key", "must be 1..200 characters")
        rec = svc.rec
        good: list[StoredEvent] = []
        idx_of: list[int] = []
        rejected: list[dict[str, Any]] = []
        now_us = int(time.time() * 1e6)
        for i, raw in enumerate(body.events):
            if not isinstance(raw, dict):
                rejected.append({"index": i, "field": f"events[{i}]",
                                 "reason": "must be an object"})
                continue
            try:
                ev = EventIn.model_validate(raw)
            except ValidationError as e:
                er = e.errors()[0]
                rejected.append({"index": i, "field": f"events[{i}]." + _loc(er.get("loc", ())),
                                 "reason": str(er.get("msg", "invalid"))[:300]})
                continue
            try:
                ts = parse_ts(ev.timestamp)
            except ValueError as e:
                rejected.append({"index": i, "field": f"events[{i}].timestamp", "reason": str(e)})
                continue
            if ev.event_type not in EVENT_TYPES:
                rejected.append({"index": i, "field": f"events[{i}].event_type",
                                 "reason": f"must be one of {', '.join(EVENT_TYPES)}"})
                continue
            idx = rec.resolve(ev.item_id)
            if idx is None:
                rejected.append({"index": i, "field": f"events[{i}].item_id",
                                 "reason": "unknown item (add it with POST /v1/items)"})
                continue
            eid = ev.event_id or (f"{key}:{i}" if key is not None else uuid.uuid4().hex)
            good.append(StoredEvent(eid, ev.user_id, ev.item_id, ev.domain or rec.domains[idx],
                                    int(ts * 1e6),
                                    ev.event_type, ev.value, ev.session_id, now_us))
            idx_of.append(i)
        new = svc.store.append(good)  # durable (committed) here
        with svc.write_lock:  # then applied in store order, with any other replica's events
            svc._apply_after(svc.rec)
        n_new = sum(new)
        m = svc.metrics
        with m.lock:
            m.events_stored += n_new
            m.events_duplicate += len(good) - n_new
            m.events_rejected += len(rejected)
        return JSONResponse({"accepted": len(good), "stored": n_new,
                             "duplicates": len(good) - n_new, "rejected": rejected})

    @app.post("/v1/items", response_model=M["ItemsOut"], tags=["items"],
              responses={409: {"description": "the model cannot embed new items"}})
    def post_items(body: ItemsIn) -> Any:
        """Add catalogue items with text: the text models (inductive transfer, textsim) embed
        them at once (no retraining); ID-only models answer 409."""
        rec = svc.rec
        if not rec.can_add_items:
            return _err(409, "items", new_items_refused(rec.model_name))
        items = [it.model_dump() for it in body.items]
        ids = [it["item_id"] for it in items]
        if len(set(ids)) != len(ids):
            return _err(422, "items", "duplicate item_id in the request")
        existing = [i for i in ids if rec.resolve(i) is not None]
        new = [it for it in items if rec.resolve(it["item_id"]) is None]
        with svc.write_lock:
            svc.store.add_items(new)
            added = svc.rec.add_items(new)
        return JSONResponse({"added": added, "existing": existing})

    @app.post("/v1/admin/reload", tags=["ops"])
    def admin_reload(body: ReloadIn | None = None) -> Any:
        """Swap in a retrained run (default: reload RUN_DIR) without dropping requests."""
        return JSONResponse(svc.reload(body.run_dir if body is not None else None))

    # the pure ASGI layer: auth, body limit and metrics, before any body is read
    inner = app.build_middleware_stack

    def build() -> Any:
        return _Guard(inner(), svc)

    app.build_middleware_stack = build  # type: ignore[method-assign]
    return app


def Field_path() -> Any:  # noqa: N802 - a FastAPI parameter marker
    return PathParam(min_length=1, max_length=256)


_RECS_PREFIX, _RECS_SUFFIX = "/v1/users/", "/recommendations"
_RECS_ROUTE = "/v1/users/{user_id}/recommendations"
_TRUE = frozenset(("1", "true", "on", "yes", "t", "y"))
_FALSE = frozenset(("0", "false", "off", "no", "f", "n"))


def _fast_recs_query(path: str, qs: bytes) -> RecQuery | None:
    """The query of a plain, valid `GET /v1/users/{user_id}/recommendations[?k=&exclude_seen=
    &explain=]`; None for anything else (odd ids, unknown or repeated parameters, bad values),
    which then takes the full FastAPI route and its validation errors."""
    user = path[len(_RECS_PREFIX):-len(_RECS_SUFFIX)]
    if not 1 <= len(user) <= 256 or "/" in user:
        return None
    k, exclude_seen, explain = 10, True, True
    if qs:
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(qs.decode("latin-1"), keep_blank_values=True, strict_parsing=True)
        except ValueError:
            return None
        seen: set[str] = set()
        for key, v in pairs:
            if key in seen:
                return None
            seen.add(key)
            if key == "k":
                if not v.isascii() or not v.isdigit() or not 1 <= int(v) <= MAX_K:
                    return None
                k = int(v)
            elif key in ("exclude_seen", "explain"):
                low = v.lower()
                if low not in _TRUE and low not in _FALSE:
                    return None
                if key == "explain":
                    explain = low in _TRUE
                else:
                    exclude_seen = low in _TRUE
            else:
                return None
    return RecQuery(user, None, k, exclude_seen, explain)


class _Guard:
    """Bearer auth on writes (and reads with --auth-reads), 413 over the body limit, metrics."""

    def __init__(self, app: Any, svc: Service) -> None:
        self.app = app
        self.svc = svc

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        started = [False]
        svc = self.svc
        method, path = scope["method"], scope["path"]

        async def send_wrap(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                started[0] = True
            await send(msg)

        async def send_json(code: int, body: bytes, headers: list | None = None) -> None:
            await send_wrap({"type": "http.response.start", "status": code, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()), *(headers or [])]})
            await send_wrap({"type": "http.response.body", "body": body})

        async def reply(code: int, field: str, message: str, headers: list | None = None) -> None:
            await send_json(code, json.dumps({"error": f"{field}: {message}" if field else message,
                                              "detail": [{"field": field, "message": message}]}
                                             ).encode(), headers)

        route_name = None
        try:
            if method == "GET" and not svc.auth_reads and path.startswith(_RECS_PREFIX) \
                    and path.endswith(_RECS_SUFFIX):
                q = _fast_recs_query(path, scope.get("query_string", b""))
                if q is not None:  # the hot route, answered without the FastAPI stack
                    route_name = _RECS_ROUTE
                    try:
                        body = json.dumps((await svc.batcher.submit(q)).to_dict(),
                                          ensure_ascii=False, allow_nan=False,
                                          separators=(",", ":")).encode()
                    except ShiftrecError as e:
                        await reply(422 if e.column else 400, e.column or "", e.message)
                        return
                    await send_json(200, body)
                    return
            headers = dict(scope.get("headers") or [])
            is_write = method == "POST" and path in WRITE_PATHS
            needs_auth = is_write or (svc.auth_reads and path.startswith("/v1/"))
            if needs_auth:
                auth = headers.get(b"authorization", b"").decode("latin-1")
                if not svc.check_token(auth):
                    await reply(401, "Authorization", "missing or wrong bearer token",
                                [(b"www-authenticate", b"Bearer")])
                    return
            cl = headers.get(b"content-length")
            if cl is not None:
                try:
                    n = int(cl)
                except ValueError:
                    await reply(400, "Content-Length", "not a number")
                    return
                if n > svc.max_body:
                    await reply(413, "body", f"larger than {svc.max_body} bytes")
                    return
            seen = [0]

            async def recv_wrap() -> Any:
                msg = await receive()
                if msg["type"] == "http.request":
                    seen[0] += len(msg.get("body", b""))
                    if seen[0] > svc.max_body:
                        raise HTTPException(413, f"body: larger than {svc.max_body} bytes")
                return msg

            await self.app(scope, recv_wrap, send_wrap)
        finally:
            route = scope.get("route")
            name = route_name or getattr(route, "path", None) or (
                path if path in WRITE_PATHS else "unmatched")
            svc.metrics.observe(method, name, status[0], time.perf_counter() - t0)


def run_identity(run_dir: str | Path) -> str:
    """SHA-256 of a run's manifest.json: it lists every part's fingerprint, so a retrained run
    differs even when it was written in the same second as the one it replaces."""
    from shiftrec.manifest import sha256_file

    return sha256_file(Path(run_dir) / "manifest.json")
