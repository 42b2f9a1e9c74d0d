"""The one orchestrator: read -> map -> check -> plan -> journal -> send -> report.

`connector push FILE` and `connector watch` both call `Pipeline.run_file`; neither
re-implements a step. Everything to send is journaled in the ledger before the first
request, so a crash anywhere is followed by a resume that sends nothing twice that was
acknowledged (DESIGN.md invariants 1-3).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from connector.accounting import RowAccount, account_rows, settle
from connector.api import ApiClient
from connector.batches import Batch, iter_batches
from connector.build import build_products
from connector.checks import check_products
from connector.common import file_identity, iso_utc
from connector.config import Settings, builtin_mappings
from connector.errors import (
    ApiUnavailable,
    DataRejected,
    FatalError,
    ImageError,
    MappingError,
    OversizedItem,
    ReadError,
)
from connector.images import ImageFolder, encode_image, is_missing, locate_images
from connector.ledger import Job, Ledger
from connector.mapping import Mapping, find_mapping, load_mapping
from connector.model import ImageJob, Problem, Product, Rejected, Row, Table
from connector.read import read_table
from connector.report import ReadInfo, Report
from connector.wire import encode, item_hash

Progress = Callable[[int, int], None]  # (jobs finished, jobs in all) of the file being sent
Stage = Callable[[str], None]  # what the work before the first request is doing: "reading", "mapping", ...

# Image jobs looked at for one request; a request holds at most this many images.
IMAGE_LOOKAHEAD = 200
IMAGES_ENVELOPE = len(b'{"system_images":[]}')

# Refused requests one batch may spend narrowing down refusals that name no item: enough to
# isolate several bad products among 500 (about 9 halvings each), bounded so a batch the API
# refuses whole costs under a minute at 1-3 requests/s, not hours.
ISOLATE_REQUESTS = 64


class Pipeline:
    """Runs files through the connector against one API client and one ledger."""

    def __init__(self, settings: Settings, client: ApiClient, ledger: Ledger, *,
                 log: logging.Logger | None = None, clock: Callable[[], float] = time.time,
                 progress: Progress | None = None, full: bool = False, stage: Stage | None = None):
        self.settings = settings
        self.client = client
        self.ledger = ledger
        self.log = log or logging.getLogger("connector.pipeline")
        self.clock = clock
        self.progress = progress
        self.stage = stage or _quiet
        self.full = full  # send every item, even those acknowledged unchanged before
        self._stop = threading.Event()
        self._reports: dict[int, Report] = {}  # files journaled by this process, finished in memory
        self._refused_cache: dict[int, set[str]] = {}
        self._baseline: Counter[str] = Counter()
        self._configured_image_max = settings.batch.image_max_bytes
        self.image_max_bytes = self._configured_image_max  # lowered for the run by a 413
        self._ahead: dict[int, bytes] = {}  # the image read, checked and encoded already: it opens the next request

    def request_stop(self) -> None:
        """Finish the request under way, then stop draining (SIGTERM in `watch`). Thread-safe."""
        self._stop.set()

    def close(self) -> None:
        self.ledger.close()

    # -- the whole path for one file -----------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where journaled work goes: work journaled for another API or source is never sent here."""
        return f"{self.settings.api.url.rstrip('/')}#source={self.settings.api.source_id}"

    def run_file(self, path: Path, *, mapping: str | None = None) -> Report:
        """Push one file: read, map, check, plan, journal, send; returns its report.

        Never raises for data or API trouble: the report's status says what happened (done,
        refused, waiting, duplicate). Raises FatalError when the setup is wrong (credentials
        refused, wrong URL, TLS): the journaled work stays in the ledger for the next run.

        Idempotent: content already journaled and unfinished is only drained; content
        already pushed with the same mapping is a duplicate (unless `full`, or settings
        allow reprocessing); the very file pushed before a crash gets its own report back.
        """
        path = Path(path)
        report = Report(file=path.name, started_at=self.clock())
        self._baseline = Counter(self.client.requests)
        try:
            report.sha256, report.size, mtime_ns = file_identity(path)
            spec = load_mapping_for(path, self.settings, mapping)
        except OSError as exc:
            return self._unavailable(report, exc)
        except MappingError as exc:
            return self._refused(report, exc)
        known = self.ledger.find_file(report.sha256, self.endpoint)
        if known and known["status"] == "journaled":
            self.log.info("%s: resuming work journaled earlier", path.name)
            self.drain()
            return self._outcome(known["id"])
        known = self.ledger.find_file(report.sha256, self.endpoint, spec.sha256)
        if known and known["status"] == "done" and not self.full:  # `full`: every item again, whatever was sent
            if known["name"] == path.name and known["mtime_ns"] == mtime_ns:
                # the very file again (or finished just before a crash): its own report, marked as
                # that push's, so nobody reads its figures as what happened now
                earlier = self._outcome(known["id"])
                earlier.already_pushed = iso_utc(known["finished_at"] or 0)
                earlier.message = (f"{path.name}: already pushed on {earlier.already_pushed}: nothing to send "
                                   "(--full sends every item again)")
                return earlier
            if not self.settings.watch.reprocess_duplicates:
                return self._duplicate(report, known)

        try:
            plan = plan_file(path, self.settings, mapping=spec, clock=self.clock, stage=self.stage)
        except (MappingError, ReadError) as exc:
            if isinstance(exc.__cause__, OSError):
                return self._unavailable(report, exc)
            return self._refused(report, exc)

        tick = self.clock()
        self.stage("planning")
        to_send, unchanged = self._changed(plan.products)
        plan.timings["plan"] = plan.timings.get("plan", 0.0) + self.clock() - tick
        if plan.refused:
            return self._refused_whole(report, plan)

        # Each item is encoded once, while batching, and journaled a batch at a time: the
        # bytes the ledger keeps are the ones the API gets, and only one batch's are in memory.
        tick = self.clock()
        self.stage("journaling")
        try:
            with self.ledger.journaling(report, mtime_ns=mtime_ns, endpoint=self.endpoint) as journal:
                batch_of: dict[str, int] = {}
                for batch in self._batches(to_send, plan):
                    index = journal.batch(batch)
                    batch_of.update((_code(item), index) for item in batch)
                    report.counts.items_to_send += len(batch)
                images = [
                    (batch_of.get(code), asdict(job))
                    for code, jobs in plan.images.items()
                    for job in jobs
                    if self.full or not self.ledger.image_sent(code, job.sha256)
                ]
                journal.images(images)
                if plan.refused:  # every product was held back while batching: nothing is kept
                    raise _NothingToSend
                plan.timings["journal"] = self.clock() - tick
                plan.fill(report)
                report.counts.items_unchanged = unchanged
                report.counts.images_to_send = len(images)
        except _NothingToSend:
            return self._refused_whole(report, plan)
        file_id = journal.file_id
        self._reports[file_id] = report
        self.log.info("%s: journaled %d batches and %d images (%d products, %d unchanged items)",
                      path.name, len(journal.batch_ids), len(images), len(plan.products), unchanged)
        del plan, to_send, batch_of, images  # what was built is in the ledger now: sending needs none of it
        self.drain()
        return self._outcome(file_id)

    def drain(self) -> bool:
        """Send pending ledger work in the order it was written. True when nothing is left.

        Stops at the first request whose retries run out (the work stays pending), or when
        asked to stop. Raises FatalError (the work stays pending) for trouble no retry can
        fix. Files whose work has all ended get their final report in the ledger.
        """
        total = self._pending_count()
        if self.progress and total:
            self.progress(0, total)
        self._refused_cache = {}
        for other in self.ledger.other_endpoints(self.endpoint):
            self.log.warning("the ledger also holds unsent work for %s; it is sent only by a connector "
                             "configured for that API and source", other.split("#")[0])
        try:
            while not self._stop.is_set() and (job := self.ledger.next_job(self.endpoint)) is not None:
                try:
                    sent = self._send_products(job) if job.kind == "products" else self._send_images()
                except FatalError as exc:
                    self.ledger.attempt(job.id, str(exc))
                    self.log.error("API error, work kept in the ledger: %s", exc)
                    raise
                if not sent:
                    return False
                if self.progress:
                    self.progress(total - self._pending_count(), total)
            return self.ledger.next_job(self.endpoint) is None
        finally:
            self._finish_files()

    # -- sending ---------------------------------------------------------------------------

    def _send_products(self, job: Job) -> bool:
        """Send one batch, whole products per request; find and drop what the API refuses.

        A 413 sends the same items in smaller requests. A refusal that names its items drops
        their products and resends the rest. A refusal that names none (the real API's error
        format is not published) is narrowed down by halving the request along product
        boundaries, so the good products still go: at most ISOLATE_REQUESTS refused requests
        per batch, after which a refused request is reported refused whole.
        """
        pieces: deque[list[dict]] = deque([job.payload])  # what is left to send, in order
        cap = len(job.payload)  # what a 413 allows per request for the rest of the batch
        budget = ISOLATE_REQUESTS
        while pieces:
            piece = pieces.popleft()
            chunk = _whole_products(piece, cap)
            if len(chunk) < len(piece):
                pieces.appendleft(piece[len(chunk):])
            try:
                # the batch as journaled goes as its bytes; a piece of it (after a 413 or a refusal) is encoded anew
                whole = chunk is job.payload and bool(job.text)
                self.client.queue_products(chunk, payload=job.text.encode("utf-8") if whole else None)
            except DataRejected as exc:
                if exc.status == 413 and len(chunk) > 1:
                    cap = (len(chunk) + 1) // 2  # too big for the server: the same items in smaller requests
                    pieces.appendleft(chunk)
                    continue
                if exc.indexes is None:
                    budget -= 1
                    if budget > 0 and _product_count(chunk) > 1:  # the API named no item: try each half
                        half = len(_whole_products(chunk, len(chunk) // 2))
                        pieces.extendleft([chunk[half:], chunk[:half]])
                        continue
                refused, problems = _refusals(chunk, exc)
                pieces.appendleft(chunk)  # what is left of the chunk and of later pieces: never half a product
                pieces = deque(kept for p in pieces if (kept := [it for it in p if _code(it) not in refused]))
                if budget <= 0 and pieces:  # no more narrowing down: the rest goes (or is refused) in one request
                    pieces = deque([_flat(pieces)])
                self.ledger.refuse_items(job.id, job.file_id, problems, _flat(pieces))
                self._refused_cache.pop(job.file_id, None)
                continue
            except ApiUnavailable as exc:
                self.ledger.attempt(job.id, str(exc))
                self.log.warning("API unavailable, work kept in the ledger: %s", exc)
                return False
            self.ledger.products_acknowledged(job.id, _acknowledged(chunk, job.hashes or {}), remaining=_flat(pieces))
        return True

    def _send_images(self) -> bool:
        """Queue the next image jobs in one request, in ledger order, up to `image_max_bytes` of JSON.

        An image goes only after its product's batch was acknowledged; one that cannot go is
        reported against its product and the others still go. False when the API is unavailable.
        """
        ready: list[tuple[Job, ImageJob, bytes]] = []  # each image's item, encoded once: sized and sent as is
        size = IMAGES_ENVELOPE
        for job in self.ledger.next_jobs(self.endpoint, IMAGE_LOOKAHEAD):
            if job.kind != "image":
                break
            image = ImageJob(**job.payload)
            why = self._why_image_waits_no_more(job, image)
            data = self._ahead.pop(job.id, None)
            if why is None and data is None:
                try:
                    data = encode(self._image_item(image))
                except ImageError as exc:
                    why = str(exc)
            if why is not None or data is None:
                self._skip_image(job, image, why or "it could not be read")
                continue
            grows = len(data) + (1 if ready else 0)
            if ready and size + grows > self.image_max_bytes:
                self._ahead = {job.id: data}  # encoded already: it opens the next request
                break
            ready.append((job, image, data))
            size += grows
        return self._queue_images(ready, size) if ready else True

    def _queue_images(self, ready: list[tuple[Job, ImageJob, bytes]], size: int) -> bool:
        try:
            self.client.queue_images(payload=b"[" + b",".join(data for _, _, data in ready) + b"]")
        except DataRejected as exc:
            if exc.status == 413 and len(ready) > 1:
                self._lower_image_limit(size)
                return True  # the same images go again, in smaller requests
            named = {i for i in exc.indexes or () if 0 <= i < len(ready)}
            if named:  # nothing of the request was queued: the named images are out, the rest goes again
                for i in sorted(named):
                    job, image, _ = ready[i]
                    self._skip_image(job, image, f"refused by the API: {_error_for(exc, i)}", state="failed")
                return True
            if len(ready) > 1:  # the API named no image: each goes on its own, so only the bad one is refused
                return all(self._queue_images([one], IMAGES_ENVELOPE + len(one[2])) for one in ready)
            job, image, _ = ready[0]
            self._skip_image(job, image, f"refused by the API: {exc}", state="failed")
            return True
        except ApiUnavailable as exc:
            self.ledger.attempt(ready[0][0].id, str(exc))
            self.log.warning("API unavailable, work kept in the ledger: %s", exc)
            return False
        self.ledger.images_acknowledged([(job.id, image.source_product_code, image.sha256) for job, image, _ in ready])
        return True

    def _why_image_waits_no_more(self, job: Job, image: ImageJob) -> str | None:
        """Why an image will never go (its product was not accepted), or None when it may go now."""
        if job.after_job is not None and self.ledger.job_state(job.after_job) != "done":
            return "its product was not accepted by the API"
        refused = self._refused_cache.get(job.file_id)
        if refused is None:
            refused = self._refused_cache[job.file_id] = self.ledger.refused_products(job.file_id)
        if image.source_product_code in refused:
            return "its product was refused by the API"
        return None

    def _image_item(self, image: ImageJob) -> dict[str, Any]:
        """The `system_images` item of one image, its bytes read, checked again and encoded now."""
        source: dict[str, Any] = {"source_id": self.settings.api.source_id,
                                  "source_product_code": image.source_product_code}
        if image.source_variant_code:
            source["source_variant_code"] = image.source_variant_code
        body: dict[str, Any] = {"image_id": image.image_id, "action": "I", "image": encode_image(image)}
        if image.main:
            body["meta"] = {"main_image": "true"}
        return {"source": source, "image": body}

    def _lower_image_limit(self, refused_size: int) -> None:
        """A 413: image requests stay below half the refused body for the rest of the run."""
        lowered = max(refused_size // 2, 1)
        level = logging.WARNING if self.image_max_bytes == self._configured_image_max else logging.DEBUG
        self.log.log(level, "the API refused a %d-byte image request as too large; image requests are now at "
                            "most %d bytes for the rest of this run (batch.image_max_bytes is %d)",
                     refused_size, lowered, self._configured_image_max)
        self.image_max_bytes = min(self.image_max_bytes, lowered)

    def _skip_image(self, job: Job, image: ImageJob, reason: str, state: str = "skipped") -> bool:
        self.ledger.close_job_with_problem(job.id, state, reason, job.file_id, Problem(
            kind="image", severity="warning", line=image.line, column=image.column, value=image.image_id,
            product=image.source_product_code, reason=f"image not sent: {reason}"))
        return True

    # -- planning helpers ------------------------------------------------------------------

    def _changed(self, products: list[Product]) -> tuple[list[Product], int]:
        """Products with only the items not acknowledged unchanged before, and how many were dropped.

        A product with items still waiting in the ledger is sent whole: what waits may differ
        from what was last acknowledged, and the newest file must win.
        """
        if self.full:
            return products, 0
        sent = self.ledger.sent_hashes(p.code for p in products)
        waiting = self.ledger.pending_products(self.endpoint)
        out, unchanged = [], 0
        for product in products:
            if product.code in waiting:
                out.append(product)
                continue
            kept = [(it, line) for it, line in zip(product.items, product.lines, strict=True) if _changed_since(
                sent.get((product.code, it["product"]["variants"]["source_variant_code"])), it)]
            unchanged += len(product.items) - len(kept)
            if kept:
                out.append(Product(product.code, [it for it, _ in kept], [line for _, line in kept], product.images))
        return out, unchanged

    def _batches(self, products: list[Product], plan: Plan) -> Iterator[Batch]:
        """Batches within the limits, one at a time; a product with an item too big for any request is held back."""
        limit = self.settings.batch.max_bytes

        def hold_back(exc: OversizedItem) -> None:
            plan.hold_back(exc.code, f"an item is {exc.size} bytes, above batch.max_bytes ({limit}); "
                                     "shorten its text fields")

        return iter_batches(products, max_items=self.settings.batch.max_items, max_bytes=limit, oversized=hold_back)

    # -- outcomes and reports ------------------------------------------------------------

    def _outcome(self, file_id: int) -> Report:
        """The report of a journaled file: final when its work has all ended, else waiting."""
        report = self._reports.pop(file_id, None) or self.ledger.file_report(file_id)
        if report.status == "done":
            report.message = f"{report.file}: done"
            return report
        backlog = self.ledger.backlog(self.endpoint)
        report.status, report.backlog = "waiting", backlog
        report.message = (f"{report.file}: API unavailable; {backlog['batches']} batches and {backlog['images']} "
                          "images wait in the ledger and will be sent on the next run")
        return report

    def _finish_files(self) -> None:
        """Complete the report of every journaled file whose jobs have all ended."""
        for file_id in self.ledger.unfinished_files(self.endpoint):
            states = self.ledger.file_job_states(file_id)
            if any(state == "pending" for (_, state) in states):
                continue
            report = self._reports.get(file_id) or self.ledger.file_report(file_id)
            send_problems = self.ledger.problems(file_id)
            report.problems.add(send_problems)
            sent = self.ledger.file_sent_counts(file_id)
            report.counts.items_sent, report.counts.images_sent = sent["items_sent"], sent["images_sent"]
            report.counts.products_refused_by_api = len({p.product for p in send_problems if p.kind == "api"})
            report.counts.images_refused += sum(1 for p in send_problems if p.kind == "image")  # not sent after all
            report.status = "done"
            report.finished_at = now = self.clock()
            planned = sum(v for k, v in report.timings.items() if k in ("read", "map", "check", "plan", "journal"))
            report.timings["send"] = round(now - (report.started_at or now) - planned, 3)
            report.timings["total"] = round(planned + report.timings["send"], 3)
            used = Counter(self.client.requests)
            used.subtract(self._baseline)
            report.requests = +used
            self.ledger.finish_file(file_id, report)

    def _pending_count(self) -> int:
        backlog = self.ledger.backlog(self.endpoint)
        return backlog["batches"] + backlog["images"]

    def _refused_whole(self, report: Report, plan: Plan) -> Report:
        """No row of the file can be sent: refused, remembered so `status` lists it, nothing journaled."""
        plan.fill(report)
        report.fail("refused", "data", "no row of the file could be sent")
        report.message = f"{report.file}: refused: no row of the file could be sent"
        report.finished_at = self.clock()
        self.ledger.record_refused(report, endpoint=self.endpoint)
        return report

    def _unavailable(self, report: Report, exc: Exception) -> Report:
        """The file could not be read right now (a share gone, a lock): it waits, it is not refused."""
        report.fail("waiting", "io", str(exc))
        report.message = f"{report.file}: cannot be read right now: {exc}"
        return report

    def _refused(self, report: Report, exc: MappingError | ReadError) -> Report:
        """Refused before anything was journaled: the mapping is unusable or the file is unreadable."""
        messages = exc.problems if isinstance(exc, MappingError) else [str(exc)]
        report.fail("refused", exc.error_kind, messages[0] if len(messages) == 1 else messages)
        report.finished_at = self.clock()
        if report.sha256 and not isinstance(exc, MappingError):
            # a broken mapping is the setup's fault, not this file's: nothing to remember
            self.ledger.record_refused(report, endpoint=self.endpoint)
        detail = messages[0] if len(messages) == 1 else f"{len(messages)} problems:\n  - " + "\n  - ".join(messages)
        report.message = f"{report.file}: refused: {detail}"
        return report

    def _duplicate(self, report: Report, known: dict) -> Report:
        report.status = "duplicate"
        finished = known["finished_at"] or 0
        report.duplicate_of = {"name": known["name"], "finished_at": iso_utc(finished)}
        report.message = f"{report.file}: the same content was already pushed as {known['name']}; nothing sent"
        return report


class _NothingToSend(Exception):
    """Every product was held back while batching: the file's journaling is undone."""


@dataclass
class Plan:
    """A file read, mapped and checked, with its images located: everything but the sending."""

    path: Path
    mapping: Any
    table: Table
    products: list[Product]
    problems: list[Problem]
    images: dict[str, list[ImageJob]]
    rejected: list[Rejected]
    held: set[str]
    timings: dict[str, float]
    image_folder: Path | None = None  # where the images were looked for
    # from the build, for the row accounting: rows folded into another's item, rows skipped (by
    # rule), every line of each product (a product held back refuses all of them)
    folded: dict[tuple[str | None, int], str] = field(default_factory=dict)
    skipped: dict[tuple[str | None, int], str] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    file_refused: bool = False  # the mapping could not map the file at all (a column it needs is missing)
    rows: RowAccount = field(default_factory=RowAccount)

    @property
    def refused(self) -> bool:
        """Nothing could be sent and rows were refused: the file as a whole is refused."""
        return not self.products and any(p.severity == "error" for p in self.problems)

    def hold_back(self, code: str, reason: str) -> None:
        """Hold back a product found unsendable after checking (e.g. an item too big to send)."""
        product = next((p for p in self.products if p.code == code), None)
        if product is None:
            return
        self.products.remove(product)
        self.held.add(code)
        self.images.pop(code, None)
        self.problems.append(Problem(kind="size", reason=reason, line=product.lines[0] if product.lines else None,
                                     product=code))
        refused = {r.row.line for r in self.rejected}
        by_line = {row.line: row for row in self.table.rows}
        self.rejected.extend(Rejected(by_line.get(line) or Row(line, {}), f"product {code} held back: {reason}")
                             for line in sorted(self.lines.get(code) or product.lines) if line not in refused)
        self.rejected.sort(key=lambda r: r.row.line)
        self.account()

    def account(self) -> RowAccount:
        """Reconcile the rows (see connector.accounting): every row read is in exactly one count."""
        self.rows, wrong = account_rows(self.table, self.products, self.folded, self.skipped, self.rejected,
                                        file_refused=self.file_refused)
        settle(self.rows, wrong, self.path.name, self.problems)
        return self.rows

    def fill(self, report: Report) -> Report:
        """Put what planning knows into `report`: how the file was read, counts, problems, timings."""
        problems = self.problems
        report.mapping_name, report.mapping_sha256 = self.mapping.name, self.mapping.sha256
        t = self.table
        report.read = ReadInfo(format=t.format, encoding=t.encoding, delimiter=t.delimiter, sheet=t.sheet,
                               rows=len(t.rows))
        report.timings.update({k: round(v, 3) for k, v in self.timings.items()})
        c = report.counts
        c.products = len(self.products)
        c.variants = sum(len(p.items) for p in self.products)
        c.products_held_back = len(self.held)
        c.rows_refused = self.rows.refused
        c.rows_skipped = sum(self.rows.skipped.values())
        report.rows = self.rows
        c.images_found = sum(len(j) for j in self.images.values())
        c.images_missing = sum(1 for p in problems if is_missing(p))
        c.images_refused = sum(1 for p in problems if p.kind == "image") - c.images_missing
        report.images_folder = str(self.image_folder) if self.image_folder else None
        report.problems.add(problems)
        report.header, report.rejected = list(t.header), list(self.rejected)
        report.header_row = self.mapping.source.header_row
        return report


def plan_file(path: Path, settings: Settings, *, mapping: str | Mapping | None = None,
              clock: Callable[[], float] = time.time, stage: Stage | None = None) -> Plan:
    """Read, map and check one file and locate its images. No network, no ledger.

    `mapping`: a loaded Mapping, or a name or path to load (default: the settings' rule for
    the file's name). Raises MappingError (the mapping is unusable) or ReadError (the file
    is unreadable).
    """
    timings: dict[str, float] = {}
    stage = stage or _quiet
    spec = mapping if isinstance(mapping, Mapping) else load_mapping_for(path, settings, mapping)
    with _collector_paused():
        tick = clock()
        stage("reading")
        table = read_table(path, **_read_options(spec, settings))
        timings["read"] = clock() - tick
        tick = clock()
        stage("mapping")
        built = build_products(table.rows, spec, source_id=int(settings.api.source_id or 0))
        timings["map"] = clock() - tick
        tick = clock()
        stage("checking")
        kept, check_problems, held = check_products(built.products)
    problems = [*table.problems, *built.problems, *check_problems]
    # held back by a bad row (build) or a broken rule (checks): code -> every line of the product,
    # its parent row and folded rows too
    held = {**built.held, **{code: sorted(built.lines.get(code) or lines) for code, lines in held.items()}}
    products = kept
    timings["check"] = clock() - tick

    tick = clock()
    stage("locating images")
    images: dict[str, list[ImageJob]] = {}
    folder = _image_folder(path, spec, settings)
    place = ImageFolder.of(folder)  # resolved once for the whole file
    for product in products:
        found, image_problems = locate_images(product, folder=place,
                                              allow_urls=settings.allow_image_urls or spec.allow_urls)
        images[product.code] = found
        problems.extend(image_problems)
    timings["plan"] = clock() - tick
    rejected = _rejected_rows(table.rows, problems, held)
    plan = Plan(path, spec, table, products, problems, images, rejected, set(held), timings, folder,
                folded=built.folded, skipped=built.skipped, lines=built.lines, file_refused=built.file_refused)
    plan.account()
    return plan


def _quiet(stage: str) -> None:
    """No display of stages (the service, tests)."""


def load_mapping_for(path: Path, settings: Settings, name: str | None = None) -> Mapping:
    """The mapping named (or the settings' rule for this file), from the user's mappings or the built-in ones."""
    return load_mapping(find_mapping(name or settings.mapping_for(path.name),
                                     [settings.folders.mappings, builtin_mappings()]))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a file is read, mapped and checked.

    Those stages make millions of small lists and dicts and no reference cycles; the
    collector's repeated scans of the growing heap cost more than the work itself (measured
    on 100k rows: map 1.0 s paused vs 3.6-5.7 s on; read 0.45 s vs 0.6 s). Reference counting
    still frees everything. Afterwards what was made is frozen, so the next young collection
    doesn't walk it all again; an earlier freeze is undone first, so a long-running `watch`
    still collects any cycles in its occasional full collections.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def _image_folder(path: Path, spec, settings: Settings) -> Path:
    """Configured images folder, else the mapping's (relative to the export), else images/ beside it.

    A file claimed by `watch` sits in processing/, but its images were dropped beside it in the inbox.
    """
    if settings.folders.images is not None:
        return settings.folders.images
    base = path.parent
    if base.resolve() == settings.folders.processing.resolve():
        base = settings.folders.inbox
    folder = getattr(spec, "images_folder", None)
    return (base / folder) if folder else base / "images"


def _read_options(spec, settings: Settings) -> dict:
    source = spec.source
    return {
        "header_row": source.header_row,
        "find_header": source.find_header,
        "sheet": source.sheet,
        "delimiter": source.delimiter,
        "encoding": source.encoding,
        "legacy_encoding": source.legacy_encoding or settings.legacy_encoding,
        "max_rows": settings.limits.max_rows,
    }


def _rejected_rows(rows: list[Row], problems: list[Problem], held: dict[str, list[int]]) -> list[Rejected]:
    """Every refused row with its reason; rows of a held-back product name the line that held it."""
    reasons: dict[int, str] = {}
    columns: dict[int, str | None] = {}
    for p in problems:
        if p.severity == "error" and p.line is not None:
            where = f"{p.column}: " if p.column and p.column not in p.reason else ""
            reasons.setdefault(p.line, f"{where}{p.reason}")
            columns.setdefault(p.line, p.column)
    for code, lines in held.items():
        first = next((ln for ln in lines if ln in reasons), None)
        for ln in lines:
            reasons.setdefault(ln, f"product {code} held back" + (f" because of line {first}" if first else ""))
    by_line = {row.line: row for row in rows}
    out = []
    for line in sorted(reasons):
        row = by_line.get(line)
        if row is None:
            row = Row(line, {})  # refused while reading: the cells never became a row
        out.append(Rejected(row, reasons[line], columns.get(line)))
    return out


def _refusals(chunk: list[dict], exc: DataRejected) -> tuple[set[str], list[Problem]]:
    """The products of `chunk` the API refused, and a problem for each; all of them when it named none."""
    problems, refused = [], set()
    for error in exc.errors:
        index = error.get("index")
        if isinstance(index, int) and 0 <= index < len(chunk):
            code = _code(chunk[index])
            refused.add(code)
            problems.append(Problem(
                kind="api", product=code, value=str(error.get("field") or ""),
                reason=f"refused by the API: {error.get('field')}: {error.get('message')}"))
    if not refused:  # the API named no item (and it could not be narrowed down further)
        refused = {_code(it) for it in chunk}
        alone = "" if len(refused) == 1 else f" (one of {len(refused)} products sent together)"
        problems = [Problem(kind="api", product=code, reason=f"refused by the API{alone}: {exc}")
                    for code in sorted(refused)]
    return refused, problems


def _code(item: dict) -> str:
    return item["source"]["source_product_code"]


def _acknowledged(chunk: list[dict], hashes: dict[tuple[str, str], str]) -> list[tuple[str, str, str]]:
    """(product, variant, hash) of each item acknowledged: the hash journaled with its bytes, else made now."""
    out = []
    for item in chunk:
        key = (_code(item), item["product"]["variants"]["source_variant_code"])
        out.append((*key, hashes.get(key) or item_hash(item)))
    return out


def _flat(pieces: deque[list[dict]]) -> list[dict]:
    return [it for piece in pieces for it in piece]


def _error_for(exc: DataRejected, index: int) -> str:
    """What the API said about item `index` of a refused request."""
    said = [f"{e.get('field')}: {e.get('message')}" for e in exc.errors if e.get("index") == index]
    return "; ".join(said) or str(exc)


def _whole_products(items: list[dict], size: int) -> list[dict]:
    """The first `size` items, cut back to a product boundary (a product too big for `size` is cut)."""
    if size >= len(items):
        return items
    cut = size
    while cut > 0 and _code(items[cut]) == _code(items[cut - 1]):
        cut -= 1
    return items[:cut] if cut > 0 else items[:max(size, 1)]


def _product_count(items: list[dict]) -> int:
    return len({_code(it) for it in items})


def _changed_since(acknowledged_hash: str | None, item: dict) -> bool:
    """True unless `item` is exactly what was acknowledged (hashing only when there is something to compare)."""
    return acknowledged_hash is None or acknowledged_hash != item_hash(item)
