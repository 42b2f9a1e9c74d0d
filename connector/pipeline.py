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
import math
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from connector.accounting import RowAccount, account_rows, settle
from connector.batches import Batch, iter_batches
from connector.build import build_products, chain_columns
from connector.catalogue import (
    Known,
    Partial,
    find_variants,
    index,
    join_gaps,
    join_item,
    json_path,
    keep_unmapped,
    merge_updates,
    partials_of,
    read_paths,
    release,
    retire,
    unchanged,
    unmapped,
)
from connector.checks import check_products
from connector.columns import Header, column_key
from connector.common import endpoint_parts, file_identity, iso_utc
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
from connector.ledger import Job, JoinedRow, Ledger, ModelRecord, WaitingRow
from connector.mapping import FAMILIES, Mapping, find_mapping, load_mapping
from connector.model import (
    ImageJob,
    Place,
    Problem,
    Product,
    Rejected,
    Row,
    Table,
    describe_place,
    place_order,
    places,
)
from connector.read import read_table
from connector.report import ReadInfo, Report
from connector.wire import encode, item_hash

if TYPE_CHECKING:  # the HTTP client is given to a Pipeline: `check` never loads requests (0.07 s)
    from connector.api import ApiClient

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
                 progress: Progress | None = None, full: bool = False, allow_deletions: bool = False,
                 stage: Stage | None = None):
        self.settings = settings
        self.client = client
        self.ledger = ledger
        self.log = log or logging.getLogger("connector.pipeline")
        self.clock = clock
        self.progress = progress
        self.stage = stage or _quiet
        self.full = full  # send every item, even those acknowledged unchanged before
        # a complete file may delete more than its mapping's max_vanished products (push --allow-deletions)
        self.allow_deletions = allow_deletions or settings.watch.allow_deletions
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

    def tidy(self) -> int:
        """Drop the ledger's bodies of work acknowledged more than retention.days ago (watch calls it)."""
        return self.ledger.compact(self.clock() - self.settings.retention.days * 86400)

    # -- the whole path for one file -----------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where journaled work goes: work journaled for another API or source is never sent here."""
        return endpoint_of(self.settings)

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
            # the names a rule gives the file ({warehouse}, {tier}) are part of the mapping's identity
            spec = load_mapping_for(path, self.settings, mapping).with_names(self.settings.names_for(path.name))
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
        duplicate: Callable[[], Report] | None = None
        if known and known["status"] == "done" and not self.full:  # `full`: every item again, whatever was sent
            if known["name"] == path.name and known["mtime_ns"] == mtime_ns:
                duplicate = partial(self._earlier, known)  # finished just before a crash: its own report
            elif not self.settings.watch.reprocess_duplicates:
                duplicate = partial(self._duplicate, report, known)
        if duplicate is not None and spec.images is None and not (spec.complete and self.allow_deletions):
            return duplicate()  # (a complete file again with --allow-deletions: what it lacks may go now)

        try:
            plan = plan_file(path, self.settings, mapping=spec, clock=self.clock, stage=self.stage)
        except (MappingError, ReadError) as exc:
            if isinstance(exc.__cause__, OSError):
                return self._unavailable(report, exc)
            return self._refused(report, exc)

        if not plan.table.rows:  # an error page or a header alone is no export: refused, never "a catalogue of nothing"
            return self._refused(report, ReadError(_no_rows(path.name, plan.mapping, plan.table)))
        tick = self.clock()
        self.stage("planning")
        if duplicate is None:
            self._merge(plan)
        if plan.mapping.complete and not plan.refused:  # a file refused for its data never deletes
            self._vanished(plan)
        to_send: list[Product] = []
        if duplicate is not None:  # the same export again: only pictures replaced since (same names, new content) go
            unchanged = sum(len(p.items) for p in plan.products)
        else:
            to_send, unchanged = self._changed(plan.products)
            unchanged += plan.unchanged
        to_send += plan.retired
        products_known = None if duplicate is None else {
            code for code, _ in self.ledger.catalogue_hashes(self.endpoint, plan.images)}
        wanted_images = [
            (code, job)
            for code, jobs in plan.images.items()
            if products_known is None or code in products_known
            for job in jobs
            if self.full or not self.ledger.image_known(self.endpoint, job)
        ]
        plan.timings["plan"] = plan.timings.get("plan", 0.0) + self.clock() - tick
        if duplicate is not None and not wanted_images and not plan.retired:
            return duplicate()
        if plan.refused:
            return self._refused_whole(report, plan)

        waiting = [WaitingRow(w.product_code, w.key, w.value, w.as_json(), w.file, w.mapping, w.line,
                              self.clock() + plan.mapping.update.wait_days * 86400) for w in plan.waiting]
        # Each item is encoded once, while batching, and journaled a batch at a time: the
        # bytes the ledger keeps are the ones the API gets, and only one batch's are in memory.
        tick = self.clock()
        self.stage("journaling")
        try:
            with self.ledger.journaling(report, mtime_ns=mtime_ns, endpoint=self.endpoint, waiting=waiting,
                                        released=plan.released, joined=plan.joined, models=plan.models) as journal:
                batch_of: dict[str, int] = {}
                for batch in self._batches(to_send, plan):
                    index = journal.batch(batch)
                    batch_of.update((_code(item), index) for item in batch)
                    report.counts.items_to_send += len(batch)
                images = [(batch_of.get(code), asdict(job)) for code, job in wanted_images
                          if code not in plan.held]  # (a product held back while batching sends no picture)
                journal.images(images)
                if plan.refused:  # every product was held back while batching: nothing is kept
                    raise _NothingToSend
                journal.release(*plan.taken(batch_of))
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
                             "configured for that API and source", endpoint_parts(other)[0])
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
                problems += self._earlier_rows_refused(job.file_id, refused, chunk)
                pieces.appendleft(chunk)  # what is left of the chunk and of later pieces: never half a product
                pieces = deque(kept for p in pieces if (kept := [it for it in p if _code(it) not in refused]))
                if budget <= 0 and pieces:  # no more narrowing down: the rest goes (or is refused) in one request
                    pieces = deque([_flat(pieces)])
                self.ledger.refuse_items(job.id, job.file_id, problems, _flat(pieces), refused=refused)
                self._refused_cache.pop(job.file_id, None)
                continue
            except ApiUnavailable as exc:
                self.ledger.attempt(job.id, str(exc))
                self.log.warning("API unavailable, work kept in the ledger: %s", exc)
                return False
            self.ledger.products_acknowledged(job.id, chunk, remaining=_flat(pieces), hashes=job.hashes)
        return True

    def _earlier_rows_refused(self, file_id: int, refused: set[str], chunk: list[dict]) -> list[Problem]:
        """Rows of earlier files that went into products the API refused, named with their file: rows that
        waited for their product (they wait again, see `Ledger.refuse_items`) and join files' rows (kept)."""
        out = [Problem(kind="api", severity="warning", product=code, value=row.value, reason=(
            f"line {row.line} of {row.file} (waiting for its product, merged into {code}): refused by the API "
            f"with product {code}; the row waits again, and goes with the next file that brings {code}"))
            for code, row in self.ledger.released_rows(file_id, refused)]
        variants = {(_code(it), it["product"]["variants"].get("source_variant_code")) for it in chunk}
        name = self.ledger.file_name(file_id)
        for code, rows in self.ledger.joined_rows(self.endpoint, refused).items():
            out.extend(Problem(kind="api", severity="warning", product=code, value=row.variant_code, reason=(
                f"line {row.line} of {row.file} (joined into {code}): refused by the API with product {code}; "
                f"the row is kept, and goes with the next file that brings {code} or {row.file}"))
                for row in rows if row.file != name and (code, row.variant_code) in variants)
        return out

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
        self.ledger.images_acknowledged([(job.id, image) for job, image, _ in ready])
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

    def _vanished(self, plan: Plan) -> None:
        """A complete file: products and variants of the catalogue it lacks have vanished.

        vanished: keep reports how many; delete adds them to the file's work as items with
        product_active "false", unless more than max_vanished products would go (then nothing
        is deleted, the report and the log say why, and --allow-deletions lets it through).
        Products the file holds but held back or skipped are present, never vanished.
        """
        present = {p.code for p in plan.products} | plan.held | {p.product for p in plan.problems if p.product}
        if not present:  # an empty or wrong export holds no product at all: it never deletes
            return
        in_file = {(p.code, it["product"]["variants"]["source_variant_code"]) for p in plan.products for it in p.items}
        # variants a join file gave to a product of this file are there with it (a duplicate file is not rejoined)
        for code, rows in self.ledger.joined_rows(self.endpoint, {p.code for p in plan.products}).items():
            in_file.update((code, r.variant_code) for r in rows)
        active: dict[str, list[str]] = {}
        for code, variant, state in self.ledger.catalogue_fields(self.endpoint, ["$.source.product_active"]):
            if state == "true":
                active.setdefault(code, []).append(variant)
        gone = {code: variants for code, variants in active.items() if code not in present}
        for code in present & set(active):  # a product still there, some of its variants not
            missing = [v for v in active[code] if (code, v) not in in_file]
            if missing and code not in plan.held:
                gone[code] = missing
        plan.vanished = len(gone)
        if not gone:
            return
        limit = plan.mapping.max_vanished
        if limit is None:
            limit = min(math.ceil(len(active) * 0.1), 50)
        products = sorted(gone)
        shown = ", ".join(products[:10]) + (f" and {len(products) - 10} more" if len(products) > 10 else "")
        if plan.mapping.vanished == "keep":
            plan.problems.append(Problem(kind="vanished", severity="warning", reason=(
                f"{len(gone)} products sent before are not in this complete file ({shown}); kept (vanished: keep)")))
            return
        if len(gone) > limit and not self.allow_deletions:
            why = (f"{len(gone)} of {len(active)} products sent before are not in this complete file ({shown}): more "
                   f"than max_vanished ({limit}), so nothing is deleted. If they are really gone, push again with "
                   "--allow-deletions (watch: watch.allow_deletions: true)")
            plan.problems.append(Problem(kind="vanished", severity="warning", reason=why))
            self.log.warning("%s: %s", plan.path.name, why)
            return
        items = {(v.product_code, v.variant_code): v.item for v in self.ledger.catalogue_variants(self.endpoint, gone)}
        for code in products:
            retired = [retire(items[(code, v)]) for v in gone[code] if (code, v) in items]
            if retired:
                plan.retired.append(Product(code, retired, [0] * len(retired)))
                plan.deleted += 1
        self.log.info("%s: %d vanished products queued for deletion", plan.path.name, plan.deleted)

    def _models(self, plan: Plan, waited: list[WaitingRow]) -> None:
        """A models file (Akeneo product_models.csv): its rows are product models, kept in the ledger, never
        sent alone. Rows of products files that waited for these models go now, under their root model;
        products already sent under a root model in this file take its new fields.
        """
        _keep_models(plan)
        records = {**self.ledger.model_records(self.endpoint), **{m.code.casefold(): m for m in plan.models}}

        grouped: dict[str, Product] = {}
        for root, rows in _by_root(records, waited).values():
            _take_waited(plan, grouped.setdefault(root.code, Product(root.code, [], [], sheets=[])), root, rows)
        roots = {r.code for m in plan.models if (r := _root_model(records, m.code)) is not None}
        known = self.ledger.known_items(self.endpoint, roots - set(grouped))
        for (code, _), item in known.items():
            root = records[code.casefold()]
            product = grouped.setdefault(code, Product(code, [], [], sheets=[]))
            product.items.append(_under_model(item, root))
            product.lines.append(0)  # an item of the catalogue: no row of any file
            assert product.sheets is not None
            product.sheets.append(None)
        plan.products = list(grouped.values())
        plan.hold(*check_products(plan.products)[1:])

    def _join_models(self, plan: Plan, waited: list[WaitingRow]) -> None:
        """A products file naming product models (Akeneo `parent`): a row naming a model is a variant of its
        root model (codes matched ignoring case, two levels), with the root's product fields; rows of a model
        no models file has brought yet wait. Rows naming no model are whole products. Rows of earlier files
        still waiting for a model this file sends (its product was held back) go with it, unless this file
        has a newer row of their variant."""
        column = plan.mapping.join.model if plan.mapping.join else None
        records = self.ledger.model_records(self.endpoint)
        by_place = {(r.sheet, r.line): r for r in plan.table.rows}
        out: dict[str, Product] = {}
        rooted: set[str] = set()  # products made of rows naming a model, by their root model's code
        for product in plan.products:
            model = _cell(by_place.get(product.places()[0]), column or "")
            if not model:
                out.setdefault(product.code, product)
                continue
            root = _root_model(records, model)
            if root is None:
                waiting_images = tuple(asdict(j) for j in plan.images.get(product.code, ()))  # go with the rows
                plan.waiting.extend(Partial(model, "model", model, it, line, (), plan.path.name, plan.mapping.name,
                                            images=waiting_images if i == 0 else ())
                                    for i, (it, line) in enumerate(zip(product.items, product.lines, strict=True)))
                plan.problems.extend(Problem(
                    kind="waiting", severity="warning", line=line, product=model, value=model,
                    reason=f"waiting for its product model: no models file has brought {model} (or its parent) yet; "
                           "the row is kept and sent under its root model when one does") for line in product.lines)
                plan.images.pop(product.code, None)
                continue
            joined = out.setdefault(root.code, Product(root.code, [], []))
            rooted.add(root.code)
            joined.items.extend(_under_model(it, root) for it in product.items)
            joined.lines.extend(product.lines)
            if product.sheets:
                joined.sheets = [*(joined.sheets or ()), *product.sheets]
            images = plan.images.pop(product.code, [])
            if images:
                have = {j.image_id for j in plan.images.get(root.code, [])}
                plan.images.setdefault(root.code, []).extend(
                    replace(j, source_product_code=root.code) for j in images if j.image_id not in have)
        for root, rows in _by_root(records, waited).values():
            if root.code in rooted:
                _take_waited(plan, out[root.code], root, rows)
        plan.products = list(out.values())
        plan.hold(*check_products(plan.products)[1:])

    def _join(self, plan: Plan) -> None:
        """A join file (`join:`): each row a variant of the product its group_by names, joined with that
        product's own item (brought by another file, known to the catalogue or journaled); the own item is
        retired. Rows of a product no file has brought wait (kept in the ledger as this file's rows).
        """
        add = plan.mapping.join.add if plan.mapping.join else ()
        _check_join_rows(plan, add)
        products = plan.products
        codes = [p.code for p in products]
        earlier = self.ledger.joined_rows(self.endpoint, codes)
        known: dict[str, list[dict]] = {}
        for (code, _), item in self.ledger.known_items(self.endpoint, codes).items():
            known.setdefault(code, []).append(item)
        out: list[Product] = []
        gaps: list[Problem] = []
        for product in products:
            mine = [it["product"]["variants"]["source_variant_code"] for it in product.items]
            plan.joined[product.code] = [JoinedRow(product.code, v, it, add, plan.path.name, plan.mapping.name, line)
                                         for v, it, line in zip(mine, product.items, product.lines, strict=True)]
            joins = set(mine) | {r.variant_code for r in earlier.get(product.code, ())}
            owns = [it for it in known.get(product.code, ())
                    if it["product"]["variants"]["source_variant_code"] not in joins]
            if not owns:
                plan.join_waiting += len(product.items)
                plan.problems.extend(Problem(
                    kind="waiting", severity="warning", line=line, product=product.code, value=v,
                    reason=f"waiting for its product: no file has brought product {product.code} yet; the row is "
                           "kept and sent, joined with it, when one does") for v, line in zip(mine, product.lines,
                                                                                              strict=True))
                continue
            # the own item goes first: the API refuses variants whose options differ from a stored variant's
            items = [retire(o) for o in owns] + [join_item(owns[0], it, add) for it in product.items]
            sheets = [product.sheets[0]] * len(owns) + product.sheets if product.sheets else None
            out.append(Product(product.code, items, [product.lines[0]] * len(owns) + product.lines, sheets=sheets))
            gaps.extend(_gap_problems(product.code, owns[0], product.items, product.lines, add))
        plan.products = out
        plan.hold(*check_products(out)[1:])
        if gaps:  # the product's own value is blank: its rows cannot be priced, all of them held back
            refused = {p.product for p in gaps}
            plan.hold(gaps, {p.code: p.places() for p in products if p.code in refused})

    def _rejoin(self, plan: Plan) -> None:
        """A product file bringing products that join files gave variants to: those variants go with its
        fields (a join row that waited goes now), and its own item is retired."""
        stored = self.ledger.joined_rows(self.endpoint, [p.code for p in plan.products])
        rejoined = []
        gapped: list[Problem] = []
        held: dict[str, list[Place]] = {}
        for product in plan.products:
            rows = stored.get(product.code)
            if not rows:
                continue
            joins = {r.variant_code for r in rows}
            owns = [it for it in product.items if it["product"]["variants"]["source_variant_code"] not in joins]
            if not owns:
                continue
            line = product.lines[0]
            joined = [join_item(owns[0], r.item, r.add) for r in rows]
            if owns[0]["source"]["product_active"] != "true":  # the product was deleted: its variants go too
                joined = [retire(it) for it in joined]
            elif missing := [p for r in rows for p in _gap_problems(product.code, owns[0], [r.item], [line], r.add)]:
                gapped.extend(missing)  # the product's own value is blank: its variants cannot be priced
                held[product.code] = product.places()
                continue
            product.items = [retire(o) for o in owns] + joined
            sheet = product.sheets[0] if product.sheets else None
            theirs = [plan.elsewhere_place(r.file, r.line) for r in rows]  # the join file's rows, named as such
            product.lines = [line] * len(owns) + [at for _, at in theirs]
            product.sheets = [sheet] * len(owns) + [label for label, _ in theirs]
            rejoined.append(product)
            self.log.info("%s: product %s goes with the %d variants of %s", plan.path.name, product.code,
                          len(rows), rows[0].file)
        if rejoined:
            plan.hold(*check_products(rejoined)[1:])
        if gapped:
            plan.hold(gapped, held)

    def _merge(self, plan: Plan) -> None:
        """Make whole items: an update file's rows merged onto the catalogue; rows that waited for a
        product this file brings merged under its items. Rows for unknown variants wait; rows that
        waited longer than their mapping's update.wait_days are reported abandoned.
        """
        now = self.clock()
        stored = self.ledger.waiting_rows(self.endpoint)
        for row in stored:
            if row.until <= now:
                assert row.id is not None
                plan.released.append(row.id)
                plan.rows_abandoned += 1
                why = (f"abandoned: line {row.line} of {row.file} ({row.key} {row.value}) waited since "
                       f"{iso_utc(row.since)} for its product, which no file brought (update.wait_days)")
                plan.problems.append(Problem(kind="waiting", severity="warning", product=row.product_code,
                                             reason=why))
                self.log.warning("%s", why)
        if plan.mapping.mode == "update":
            partials = partials_of(plan.products, plan.mapping, plan.cleared, plan.path.name)
            codes: set[str] = set()
            if not self.full:  # rows that change nothing are counted, not merged (the catalogue's values tell)
                paths = read_paths(plan.mapping)
                named = [("variant", "source_variant_code"), *paths]  # the code is the catalogue's key
                values = Known({(row[0], row[1]): dict(zip(named, row[1:], strict=True))
                                for row in self.ledger.catalogue_fields(self.endpoint, [json_path(x) for x in paths])})
                sku_index = variant_index = None  # only for rows not found under their product code
                if plan.mapping.update.key == "sku" or any(not find_variants(p, values) for p in partials):
                    sku_index, variant_index = index(values)
                partials, plan.unchanged = unchanged(partials, values, sku_index, variant_index,
                                                     self.ledger.pending_products(self.endpoint))
                codes = {t[0] for p in partials for t in find_variants(p, values, sku_index, variant_index)}
                del values
            codes |= {p.product_code for p in partials}
            known = Known(self.ledger.known_items(self.endpoint, codes))
            by_sku = by_variant = None
            if any(not find_variants(p, known) for p in partials) and plan.mapping.update.key != "product":
                known = Known(self.ledger.known_items(self.endpoint))  # found by SKU or variant code elsewhere
                by_sku, by_variant = index(known)
            merged = merge_updates(partials, known, by_sku, by_variant)
            plan.products = merged.products
            plan.hold(*check_products(merged.products)[1:])
            plan.waiting = merged.waiting
            until = iso_utc(now + plan.mapping.update.wait_days * 86400)
            plan.problems.extend(Problem(
                kind="waiting", severity="warning", line=p.line, product=p.product_code, value=p.value,
                reason=f"waiting for its product: no file has brought {p.key} {p.value} yet; the row is kept and "
                       f"sent, merged, when one does (until {until})") for p in merged.waiting)
        if plan.mapping.models is not None:
            self._models(plan, [r for r in stored if r.until > now and r.key == "model"])
        elif plan.mapping.join is not None and plan.mapping.join.model is not None:
            self._join_models(plan, [r for r in stored if r.until > now and r.key == "model"])
        elif plan.mapping.join is not None:
            self._join(plan)
        elif plan.mapping.mode == "full":
            self._rejoin(plan)
        ready = [_partial(r) for r in stored if r.until > now and r.key != "model"]
        plan.products, released = release(plan.products, ready, into=plan.merged)
        for p in released:
            self.log.info("%s: line %d of %s (waiting for its product) goes with it", plan.path.name, p.line, p.file)
        gone = {p.id for p in released}
        plan.problems.extend(Problem(  # rows waiting for a product this file brings but holds back: they wait on
            kind="waiting", severity="warning", product=p.product_code, value=p.value, reason=(
                f"line {p.line} of {p.file} (waiting for its product): product {p.product_code} held back; the row "
                f"still waits, and goes with the next file that brings {p.product_code}"))
            for p in ready if p.id not in gone and p.product_code in plan.held)
        if plan.mapping.mode == "full" and plan.mapping.join is None and plan.mapping.models is None:
            self._keep_unmapped(plan)
        going = {p.code for p in plan.products}  # no picture goes before (or without) its product
        plan.images = {code: jobs for code, jobs in plan.images.items() if code in going}

    def _keep_unmapped(self, plan: Plan) -> None:
        """A full file is the truth for what it maps; what it does not map (a warehouse's stock an update
        file set) is kept from the catalogue. Only those fields are read (by SQLite, without decoding whole
        items: a 100,000-item catalogue costs a fraction of a second), and whole items journaled and not
        yet acknowledged for the file's products."""
        paths, families = unmapped(plan.mapping, plan.table.header)
        with _collector_paused():
            known = {(code, variant): orjson.loads(item) for code, variant, item in self.ledger.catalogue_items_beside(
                self.endpoint, [json_path(x) for x in paths],
                [(json_path(path), FAMILIES[path[1]][3], names) for path, names in families])}
            pending = self.ledger.pending_products(self.endpoint) & {p.code for p in plan.products}
            if pending:
                known.update(self.ledger.known_items(self.endpoint, pending))
            if known:
                keep_unmapped(plan.products, known, plan.mapping, plan.table.header)

    def _changed(self, products: list[Product]) -> tuple[list[Product], int]:
        """Products with only the items not acknowledged unchanged before, and how many were dropped.

        A product with items still waiting in the ledger is sent whole: what waits may differ
        from what was last acknowledged, and the newest file must win. What it returns is only
        batched (codes and items): rows are named from the plan's own products, which keep their
        lines and sheets (Plan.hold_back), so these need neither.
        """
        if self.full:
            return products, 0
        sent = self.ledger.catalogue_hashes(self.endpoint, (p.code for p in products))
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

    def _earlier(self, known: dict) -> Report:
        """The very file again (or finished just before a crash): its own report, marked as that
        push's, so nobody reads its figures as what happened now."""
        earlier = self._outcome(known["id"])
        earlier.already_pushed = iso_utc(known["finished_at"] or 0)
        earlier.message = (f"{earlier.file}: already pushed on {earlier.already_pushed}: nothing to send "
                           "(--full sends every item again)")
        return earlier

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
    # from the build, for the row accounting, by (sheet, line): rows folded into another's item,
    # rows skipped (by rule), every row of each product (a product held back refuses all of them)
    folded: dict[Place, str] = field(default_factory=dict)
    skipped: dict[Place, str] = field(default_factory=dict)
    lines: dict[str, list[int]] = field(default_factory=dict)
    sheets: dict[str, list[str | None]] = field(default_factory=dict)  # ... their sheets, when several are read
    file_refused: bool = False  # the mapping could not map the file at all (a column it needs is missing)
    rows: RowAccount = field(default_factory=RowAccount)
    cleared: dict[Place, frozenset[str]] = field(default_factory=dict)  # update files: row -> columns cleared
    waiting: list[Partial] = field(default_factory=list)  # rows waiting for their product (kept in the ledger)
    released: list[int] = field(default_factory=list)  # ids of rows that waited and were abandoned
    rows_abandoned: int = 0
    unchanged: int = 0  # update rows that change nothing: not merged, counted as unchanged items
    vanished: int = 0  # complete files: products of the catalogue the file lacks
    deleted: int = 0  # ... of which queued for deletion
    retired: list[Product] = field(default_factory=list)  # their items, with product_active "false"
    joined: dict[str, list[JoinedRow]] = field(default_factory=dict)  # a join file's rows, kept in the ledger
    models: list[ModelRecord] = field(default_factory=list)  # a models file's product models, kept in the ledger
    join_waiting: int = 0  # ... of which waiting for their product
    # rows of earlier files joined into this file's products (rows that waited, a join file's rows), by the
    # place they are given there (see `elsewhere_place`) -> (their file, their line)
    elsewhere: dict[Place, tuple[str, int]] = field(default_factory=dict)
    # rows that waited, by the product they went in; they leave the ledger only once it is sent (`taken`)
    merged: dict[str, list[Partial]] = field(default_factory=dict)

    @property
    def refused(self) -> bool:
        """Nothing could be sent (or wait) and rows were refused: the file as a whole is refused."""
        if self.products or self.waiting or self.join_waiting or self.models:  # (product models are kept)
            return False
        return any(p.severity == "error" for p in self.problems)

    def elsewhere_place(self, file: str, line: int) -> Place:
        """The place of line `line` of an earlier `file` among this file's products: a sheet name no
        workbook can have (Excel refuses `[`), so it is never taken for a row of this file."""
        place = (f"[{file}]", line)
        self.elsewhere[place] = (file, line)
        return place

    def hold(self, problems: list[Problem], held: dict[str, list[Place]]) -> None:
        """Problems found once rows were merged or joined: their products held back, their rows rejected.

        Rows of earlier files among them (`elsewhere`) are named with their file in the problems, and are
        neither rejected rows of this file nor counted in its rows."""
        causes: dict[str | None, str] = {}  # a product held back because of a row of an earlier file
        for p in problems:
            if p.severity == "error" and (where := self.elsewhere.get((p.sheet, p.line or 0))):
                causes.setdefault(p.product, f"line {where[1]} of {where[0]}")
        problems = [self._named_elsewhere(p) for p in problems]
        self.problems.extend(problems)
        for one in held:  # rows of earlier files that went into a product held back wait on
            self.problems.extend(self._still_waiting(one, f"product {one} held back"
                                                     + (f" because of {causes[one]}" if one in causes else "")))
        self.held.update(held)
        self.products = [p for p in self.products if p.code not in held]
        known = {(r.row.sheet, r.row.line) for r in self.rejected}
        here = {code: [place for place in where if place not in self.elsewhere] for code, where in held.items()}
        new = [r for r in _rejected_rows(self.table.rows, problems, here) if (r.row.sheet, r.row.line) not in known]
        new = [Rejected(r.row, f"{r.reason} because of {causes[code]}", r.column)
               if (code := _held_code(r.reason)) in causes else r for r in new]
        self.rejected.extend(new)
        _in_file_order(self.rejected, self.table.rows)
        self._refused_after_mapping(new)

    def _named_elsewhere(self, problem: Problem) -> Problem:
        """A problem at a row of an earlier file, as `line 3 of products.csv: ...`, with no line of this file."""
        if not self.elsewhere:
            return problem

        def named(m: re.Match) -> str:  # another row mentioned in the reason (checks._line), named the same way
            found = self.elsewhere.get((m[2] if m[2] is not None else m[3], int(m[4])))
            return f"line {found[1]} of {found[0]}" if found else m[0]

        reason = _MENTIONED.sub(named, problem.reason) if "[" in problem.reason else problem.reason
        where = self.elsewhere.get((problem.sheet, problem.line or 0))
        if where is None:
            return replace(problem, reason=reason)
        return replace(problem, reason=f"line {where[1]} of {where[0]}: {reason}", line=None, sheet=None,
                       row_number=None)

    def _refused_after_mapping(self, new: list[Rejected]) -> None:
        """The row accounting was made when the file was mapped (rows waiting for their product
        count as items then): a row refused later (once joined, merged or batched) moves from
        items to refused, so the counts still add up."""
        not_items, rows = set(self.folded) | set(self.skipped), {(row.sheet, row.line) for row in self.table.rows}
        moved = sum(1 for r in new if (place := (r.row.sheet, r.row.line)) not in not_items and place in rows)
        self.rows.items -= moved
        self.rows.refused += moved

    def taken(self, journaled: Container[str]) -> tuple[list[tuple[int, str]], list[int]]:
        """What becomes of the rows that waited and went into this file's products (`merged`), by waiting id.

        Returns (row, product) pairs of rows that went into a product `journaled` for sending (they leave
        the ledger once it is acknowledged: `Journal.release`), and the rows whose products are all here
        and all unchanged (nothing of them is left to send: they leave now). A row that went into a product
        held back, or one not sent for any other reason, keeps waiting.
        """
        into: dict[int, set[str]] = {}
        for code, partials in self.merged.items():
            for one in partials:
                if one.id is not None:
                    into.setdefault(one.id, set()).add(code)
        present = {p.code for p in self.products}
        taken: list[tuple[int, str]] = []
        settled: list[int] = []
        for row, codes in into.items():
            if codes & self.held:
                continue
            sent = sorted(code for code in codes if code in journaled)
            if sent:
                taken.extend((row, code) for code in sent)
            elif codes <= present:
                settled.append(row)
        return taken, settled

    def _still_waiting(self, code: str, why: str, kind: str = "waiting") -> list[Problem]:
        """Rows of earlier files that went into product `code`, held back: they wait on, and the report says so."""
        return [Problem(kind=kind, severity="warning", product=code, value=p.value, reason=(
            f"line {p.line} of {p.file or 'an earlier file'} (waiting for its product, merged into {code}): {why}; "
            f"the row still waits, and goes with the next file that brings {code}")) for p in self.merged.get(code, ())]

    def places_of(self, code: str) -> list[Place]:
        """Every (sheet, line) of a product built from this file, sent or not."""
        return places(self.lines.get(code, []), self.sheets.get(code, []))

    def hold_back(self, code: str, reason: str) -> None:
        """Hold back a product found unsendable after checking (e.g. an item too big to send)."""
        product = next((p for p in self.products if p.code == code), None)
        if product is None:
            return
        self.products.remove(product)
        self.held.add(code)
        self.images.pop(code, None)
        where = sorted(self.places_of(code) or product.places(), key=place_order)
        first = where[0] if where else (None, None)
        self.problems.append(Problem(kind="size", reason=reason, line=first[1], product=code, sheet=first[0]))
        refused = {(r.row.sheet, r.row.line) for r in self.rejected}
        by_place = {(row.sheet, row.line): row for row in self.table.rows}
        new = [Rejected(by_place.get(place) or Row(place[1], {}, place[0]), f"product {code} held back: {reason}")
               for place in where if place not in refused]
        self.rejected.extend(new)
        _in_file_order(self.rejected, self.table.rows)
        self._refused_after_mapping(new)
        # rows of earlier files that waited for this product and were merged into it: not this file's rows
        self.problems.extend(self._still_waiting(code, f"product {code} held back: {reason}", kind="size"))

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
                               rows=len(t.rows), encoding_reason=t.encoding_reason, header_row=t.header_row,
                               columns=list(t.header))
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
        c.rows_waiting = len(self.waiting) + self.join_waiting
        c.products_vanished, c.products_deleted = self.vanished, self.deleted
        c.rows_abandoned = self.rows_abandoned
        c.product_models = len(self.models)
        report.problems.add(problems)
        report.header, report.rejected = list(t.header), list(self.rejected)
        report.header_row = self.mapping.source.header_row
        report.csv_delimiter, report.csv_encoding = self.mapping.source.delimiter, self.mapping.source.encoding
        sheet = self.mapping.source.sheet
        report.sheet_position = sheet if isinstance(sheet, int) and not isinstance(sheet, bool) else None
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
    spec = spec.with_names(settings.names_for(path.name))
    cleared: dict[Place, frozenset[str]] = {}
    with _collector_paused(new_file=True):
        tick = clock()
        stage("reading")
        table = read_table(path, **_read_options(spec, settings))
        if table.twice:
            _refuse_ambiguous(path.name, spec, table)
        timings["read"] = clock() - tick
        tick = clock()
        stage("mapping")
        rows = table.rows
        if spec.mode == "update" and spec.update.clear is not None:
            rows, cleared = _cleared(rows, spec.update.clear)
        built = build_products(rows, spec, source_id=int(settings.api.source_id or 0))
        timings["map"] = clock() - tick
        tick = clock()
        stage("checking")
        check_problems: list[Problem] = []
        held: dict[str, list[Place]] = {}
        if spec.mode == "update" or spec.join is not None or spec.models is not None:  # checked once whole
            kept = built.products
        else:
            kept, check_problems, held = check_products(built.products)
    problems = [*table.problems, *built.problems, *check_problems]
    _show_header(problems, table)
    # held back by a bad row (build) or a broken rule (checks): code -> every (sheet, line) of the
    # product, its parent row and folded rows too
    held = {**built.held, **{code: sorted(places(built.lines.get(code, []), built.sheets.get(code, [])) or where,
                                          key=place_order) for code, where in held.items()}}
    products = kept
    timings["check"] = clock() - tick

    tick = clock()
    stage("locating images")
    images: dict[str, list[ImageJob]] = {}
    folder = _image_folder(path, spec, settings)
    place = ImageFolder.of(folder)  # resolved once for the whole file
    # A problem per image not found, 100,000 when a file's images are elsewhere: the collector's
    # scans of them cost 0.08 s; locating images makes no reference cycles (test_images)
    with _collector_paused():
        for product in products:
            if not product.images:
                continue  # nothing to look for (a stock file): no walk of the image folder per product
            found, image_problems = locate_images(product, folder=place,
                                                  allow_urls=settings.allow_image_urls or spec.allow_urls)
            images[product.code] = found
            problems.extend(image_problems)
    _number_rows(problems, table, mentions=[*built.problems, *check_problems])  # image problems too
    timings["plan"] = clock() - tick
    rejected = _rejected_rows(table.rows, problems, held, table.refused_rows)
    plan = Plan(path, spec, table, products, problems, images, rejected, set(held), timings, folder,
                folded=built.folded, skipped=built.skipped, lines=built.lines, sheets=built.sheets,
                file_refused=built.file_refused,
                cleared=cleared)
    plan.account()
    return plan


# "sheet '[products.csv]', line 3": a row of an earlier file as checks.describes it (see Plan.elsewhere_place)
_MENTIONED = re.compile(r"""sheet ('(\[[^']*\])'|"(\[[^"]*\])"), line (\d+)""")


def _held_code(reason: str) -> str | None:
    """The product of a `product X held back` reason (see _rejected_rows), else None."""
    m = re.fullmatch(r"product (.+) held back", reason)
    return m[1] if m else None


def _check_join_rows(plan: Plan, add: Sequence[str]) -> None:
    """A join file's rows checked by their own rules (options, repeated codes), whether or not their
    product is known yet: a product whose rows break one is held back with its rows."""
    stand_in = {"source": {"product_active": "true"}, "product": {"title": "-"}}
    # (`add` fields are differences, checked once added to the product's value)
    _, problems, held = check_products([Product(p.code, [join_item(stand_in, it, add) for it in p.items],
                                                p.lines) for p in plan.products])
    plan.hold(problems, held)


def _keep_models(plan: Plan) -> None:
    """A models file's products are product models: kept (`plan.models`), never products of the file."""
    column = plan.mapping.models or ""
    by_place = {(r.sheet, r.line): r for r in plan.table.rows}
    for product in plan.products:
        row = by_place.get(product.places()[0])
        fields = {k: v for k, v in product.items[0]["product"].items() if k not in ("variants", "options")}
        plan.models.append(ModelRecord(product.code, _cell(row, column), fields))
    plan.products, plan.images = [], {}


def foresee_joins(plan: Plan) -> None:
    """What a push would do with a join file's rows, as far as `check` can tell without the ledger.

    A push joins each row with its product's own item, brought by another file, and keeps rows of a
    product no file has brought yet (see Pipeline._join and _join_models). Check cannot know which
    products the catalogue has, so: the rows' own rules are checked as a push checks them, and every
    row left that needs another file's product is taken out of the products this file sends alone
    and counted waiting, with a problem naming that product. A models file's rows are product
    models, kept and never sent alone: counted as such, not as products (see Pipeline._models).
    Other mappings: nothing changes.
    """
    if plan.mapping.models is not None:
        _keep_models(plan)
        return
    join = plan.mapping.join
    if join is None:
        return
    by_place = {(r.sheet, r.line): r for r in plan.table.rows}
    waiting: list[tuple[str, str, str, int]] = []  # (what it waits for, its code, the row's code, line)
    if join.model is None:
        _check_join_rows(plan, join.add)
        for product in plan.products:
            waiting.extend(("product", product.code, it["product"]["variants"]["source_variant_code"], line)
                           for it, line in zip(product.items, product.lines, strict=True))
        plan.products = []
    else:  # Akeneo: only rows naming a product model wait for it; the others are whole products
        alone = []
        for product in plan.products:
            model = _cell(by_place.get(product.places()[0]), join.model)
            if model:
                waiting.extend(("product model", model, model, line) for line in product.lines)
            else:
                alone.append(product)
        plan.products = alone
    plan.join_waiting += len(waiting)
    plan.problems.extend(Problem(
        kind="waiting", severity="warning", line=line, product=code, value=value,
        reason=f"waiting for its {what} {code}: a push sends the row joined with it if a file brought it before, "
               "or keeps the row until one does (check reads no catalogue)") for what, code, value, line in waiting)
    going = {p.code for p in plan.products}  # no picture goes without its product
    plan.images = {code: jobs for code, jobs in plan.images.items() if code in going}


def endpoint_of(settings: Settings) -> str:
    """API url + source id: the key of journaled work and of the catalogue."""
    return f"{settings.api.url.rstrip('/')}#source={settings.api.source_id}"


def _quiet(stage: str) -> None:
    """No display of stages (the service, tests)."""


def load_mapping_for(path: Path, settings: Settings, name: str | None = None) -> Mapping:
    """The mapping named (or the settings' rule for this file), from the user's mappings or the built-in ones."""
    return load_mapping(find_mapping(name or settings.mapping_for(path.name),
                                     [settings.folders.mappings, builtin_mappings()]))


@contextlib.contextmanager
def _collector_paused(new_file: bool = False) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a file is read, mapped and checked.

    Those stages make millions of small lists and dicts and no reference cycles; the
    collector's repeated scans of the growing heap cost more than the work itself (measured
    on 100k rows: map 1.0 s paused vs 3.6-5.7 s on; read 0.45 s vs 0.6 s). Reference counting
    still frees everything. Afterwards what was made is frozen, so the next young collection
    doesn't walk it all again; an earlier freeze is undone first. `new_file`: what an earlier
    file froze is collected once, as the next file starts: cycles frozen with one file's objects
    would otherwise be frozen again with the next one's, never freed in a `watch` that runs for
    months (within a file, a second pause must not walk the file's own heap: 0.8 s on 100k rows).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    if gc.get_freeze_count():
        gc.unfreeze()
        if new_file:
            gc.collect()
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
        "columns": source.columns,
        "sheet": source.sheet,
        "delimiter": source.delimiter,
        "encoding": source.encoding,
        # the mapping's candidates, else connector.yaml's (a name or a list)
        "legacy_encoding": source.legacy_encoding or settings.legacy_encoding,
        "max_rows": settings.limits.max_rows,
    }


def _cell(row: Row | None, column: str) -> str:
    """A row's cell by column name (exact, else ignoring case and spaces), stripped; "" when absent."""
    if row is None or not column:
        return ""
    found = Header(row.cells).find(column, "models")
    return row.cells[found].strip() if found is not None else ""


def _gap_problems(code: str, own: dict, rows: list[dict], lines: list[int], add: Sequence[str]) -> list[Problem]:
    """Join rows adding a difference to a value the product's own item lacks: refused, saying why."""
    out = []
    for row, line in zip(rows, lines, strict=True):
        variant = row["product"]["variants"].get("source_variant_code")
        for name, difference in join_gaps(own, row, add):
            out.append(Problem(
                kind="join", severity="error", line=line, product=code, value=str(difference),
                reason=f"variant {variant} adds {difference} to its product's {name}, and product {code} has no "
                       f"{name}: fill in the product's {name} in its product file"))
    return out


def _partial(row: WaitingRow) -> Partial:
    """A row that waited in the ledger, as the partial record it was kept as."""
    return Partial.from_json(row.partial, product_code=row.product_code, key=row.key, value=row.value, line=row.line,
                             file=row.file, mapping=row.mapping, id=row.id)


def _by_root(records: dict[str, ModelRecord], waited: list[WaitingRow]
             ) -> dict[str, tuple[ModelRecord, list[WaitingRow]]]:
    """Rows waiting for a product model, by the code of their root model (those whose root is known), in order."""
    out: dict[str, tuple[ModelRecord, list[WaitingRow]]] = {}
    for row in waited:
        root = _root_model(records, row.value)
        if root is not None:
            out.setdefault(root.code, (root, []))[1].append(row)
    return out


def _take_waited(plan: Plan, product: Product, root: ModelRecord, rows: list[WaitingRow]) -> None:
    """Rows that waited for a model under `root` go in `product`, the product of the root, as rows of their
    own files: the newest row of each variant, unless `product` has that variant already (a newer row).
    Every one of them leaves the ledger once the product is sent (`Plan.taken`)."""
    def variant(row: WaitingRow) -> str:
        return row.partial["item"]["product"]["variants"]["source_variant_code"]

    have = {it["product"]["variants"]["source_variant_code"] for it in product.items}
    latest = {variant(row): row for row in rows}  # the newest row of a variant wins
    if product.sheets is None:
        product.sheets = [None] * len(product.lines)
    for row in rows:
        plan.merged.setdefault(root.code, []).append(_partial(row))
        if latest[variant(row)] is not row or variant(row) in have:
            continue
        product.items.append(_under_model(row.partial["item"], root))
        sheet, line = plan.elsewhere_place(row.file, row.line)
        product.lines.append(line)
        product.sheets.append(sheet)
        images = {j.image_id for j in plan.images.get(root.code, [])}
        plan.images.setdefault(root.code, []).extend(
            ImageJob(**{**job, "source_product_code": root.code}) for job in row.partial.get("images", ())
            if job["image_id"] not in images)


def _root_model(records: dict[str, ModelRecord], code: str) -> ModelRecord | None:
    """The root model of model `code` (following parents, codes ignoring case), or None while one is unknown."""
    record = records.get(code.casefold())
    seen: set[str] = set()
    while record is not None and record.parent and len(seen) < 8:
        seen.add(record.code.casefold())
        if record.parent.casefold() in seen:
            return None  # a loop of parents: no root
        record = records.get(record.parent.casefold())
    return record


def _under_model(item: dict, root: ModelRecord) -> dict:
    """An item as a variant of its root model: the root's code and product fields, its own variant and options."""
    product = {k: v for k, v in item["product"].items() if k != "variants"}
    product.update(root.product)
    product["variants"] = item["product"]["variants"]
    return {"source": {**item["source"], "source_product_code": root.code}, "product": product}


def _no_rows(name: str, spec: Mapping, table: Table) -> str:
    """Why a file with no data rows is refused: its header, and whether it has the group_by column at all."""
    columns = chain_columns(spec.group_by)
    header = Header(table.header)
    why = f"{name}: the file holds no data rows (its header reads: {_header_shown(table)})"
    if columns and not any(header.find(c, "group_by") is not None for c in columns):
        why += f"; it lacks the group_by column {columns[0]!r}: not the export the mapping {spec.name} reads"
    return why


def _refuse_ambiguous(name: str, spec: Mapping, table: Table) -> None:
    """Refuse a file whose header names a column twice when the mapping reads that name: which of
    the two it means is not clear. A name the mapping never reads only warns (read._name_header).

    The mapping is bound once to an empty header: every column it names by name comes out missing.
    """
    probe = build_products([Row(1, {}, None, 1)], replace(spec, missing_columns="warn"), source_id=0)
    wanted = {column_key(p.column) for p in probe.problems if p.kind == "column" and p.column}
    for column, positions in table.twice.items():
        if column_key(column) in wanted:
            raise ReadError(
                f"{name}: the header names the column {column!r} {len(positions)} times (columns "
                f"{', '.join(map(str, positions))}) and the mapping reads {column!r}: which one it means is "
                f"not clear; give the columns different names in the export")


def _cleared(rows: list[Row], token: str) -> tuple[list[Row], dict[Place, frozenset[str]]]:
    """Rows with cells holding the clear token made blank, and which columns each row (sheet, line) cleared."""
    out, cleared = [], {}
    for row in rows:
        gone = frozenset(column for column, text in row.cells.items() if text.strip() == token)
        if gone:
            cleared[(row.sheet, row.line)] = gone
            row = replace(row, cells={c: ("" if c in gone else t) for c, t in row.cells.items()})
        out.append(row)
    return out, cleared


def _show_header(problems: list[Problem], table: Table) -> None:
    """A column the mapping names but the file lacks: say what the header that was read holds.

    Most often the header is not where the mapping says (a banner row above it, no header row
    at all), and the names read there show it at once.
    """
    missing = [p for p in problems if p.kind == "column" and p.severity == "error"]
    if not missing:
        return
    shown = _header_shown(table)
    where = f"row {table.header_row}" if table.header_row else "no header row: columns named by position"
    for p in missing:
        p.reason += f"; the file's header ({where}) reads: {shown}"


def _header_shown(table: Table, most: int = 300) -> str:
    """The header that was read, for a message: its names, cut after `most` characters."""
    shown = ", ".join(table.header)
    return shown[:most] + "..." if len(shown) > most else shown


_LINE_MENTION = re.compile(r"\bline (\d+)\b")


def _number_rows(problems: list[Problem], table: Table, mentions: Sequence[Problem] = ()) -> None:
    """Give every problem with a line the row a person finds it on in a spreadsheet (Row.row_number).

    In a CSV whose cells run over several lines the two differ, so where a reason of `mentions`
    (mapping and checking problems) names another record's line, it names its row too:
    "repeats the options of line 40" becomes "... of row 12 (line 40)".
    """
    if table.format != "csv":  # a workbook's line is its Excel row
        for p in problems:
            if p.row_number is None:
                p.row_number = p.line
        return
    if not any(p.line is not None for p in problems):
        return  # a clean file pays nothing
    numbers = {row.line: row.row_number for row in table.rows}
    for p in problems:
        if p.row_number is None and p.line is not None:
            p.row_number = numbers.get(p.line)
    if any(line != number for line, number in numbers.items()):
        def place(match: re.Match) -> str:
            line = int(match.group(1))
            return describe_place(line, numbers.get(line)) if line in numbers else match.group()

        for p in mentions:
            if "line " in p.reason:
                p.reason = _LINE_MENTION.sub(place, p.reason)


def _rejected_rows(rows: list[Row], problems: list[Problem], held: dict[str, list[Place]],
                   unread: Sequence[Row] = ()) -> list[Rejected]:
    """Every refused row with its reason, in file order; rows of a held-back product name the row that held it.

    Rows are known by (sheet, line): with several sheets read, each sheet has its own line 3.
    `unread` are the records the reader refused, with the cells it could read of them (they
    never became rows); a refused record not among them is listed with no cells.
    """
    reasons: dict[Place, str] = {}
    columns: dict[Place, str | None] = {}
    numbers: dict[Place, int] = {}  # place -> row; the rows refused while reading never became a Row
    for p in problems:
        if p.severity == "error" and p.line is not None:
            place = (p.sheet, p.line)
            where = f"{p.column}: " if p.column and not _names_column(p.reason, p.column) else ""
            reasons.setdefault(place, f"{where}{p.reason}")
            columns.setdefault(place, p.column)
            if p.row_number is not None:
                numbers.setdefault(place, p.row_number)
    for code, its_rows in held.items():
        first = next((place for place in its_rows if place in reasons), None)
        because = f" because of {describe_place(first[1], numbers.get(first), first[0])}" if first else ""
        for place in its_rows:
            reasons.setdefault(place, f"product {code} held back{because}")
    if not reasons:
        return []
    by_place = {place: row for row in chain(unread, rows) if (place := (row.sheet, row.line)) in reasons}
    out = []
    for place, reason in reasons.items():
        row = by_place.get(place)
        if row is None:  # refused while reading, its cells not kept: listed with none
            row = Row(place[1], {}, place[0], numbers.get(place))
        out.append(Rejected(row, reason, columns.get(place)))
    return _in_file_order(out, rows)


def _names_column(reason: str, column: str) -> bool:
    """Whether a reason names the column itself: it starts with it (a field read from a column of its
    name: `price "12,5O" is not a number`) or quotes it (`column "Unit"`). A name that is only part of
    another word or value (column 4 in `qty "4.5"`) does not count."""
    return reason.startswith(f"{column} ") or f'"{column}"' in reason


def _in_file_order(rejected: list[Rejected], rows: list[Row]) -> list[Rejected]:
    """Sort refused rows (in place) as the file has them: by sheet in the order read, then by line."""
    sheets = {row.sheet: None for row in rows} if any(r.row.sheet for r in rejected) else {}
    rank = {sheet: i for i, sheet in enumerate(sheets)}
    rejected.sort(key=lambda r: (rank.get(r.row.sheet, len(rank)), r.row.line))
    return rejected


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
