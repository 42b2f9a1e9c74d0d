"""`connector verify [--repair]`: does Stock2Shop hold what this source had acknowledged?

The queue is asynchronous: an item or an image is acknowledged with 200 and processed later,
and one the queue fails then (an image whose product failed, an item refused later) is lost
without a word (api-docs, "Images": "If the product fails to be created ... you will need to
requeue the image"). Verify reconciles:

    expected  what the ledger says this endpoint (API url + source) had acknowledged: the last
              acknowledged whole item of every variant, and the images done     [acknowledged()]
    stored    POST /v1/products/elastic_search, terms on source_product_code, a page of
              `verify.page_size` codes per request, through the one ApiClient (its limiter),
              through the channel connector/channels.py chooses (a user that is not an admin
              finds nothing without one)
    findings  products and variants missing, price/qty/sku/title differing from what was last
              sent, images missing                                               [compare(), pure]

A search that finds none of a catalogue holding products is not "everything is missing": the
result is `unseen` (the search could not see them: the wrong channel, or none), with the
account's channels and what to set, and `--repair` sends nothing then (exit 2) unless
`--resend-unseen` says a person saw that Stock2Shop lacks them (the queue lost them all). Before that,
a channel verify chose itself (the account's only one) is tried the other way once: an admin
whose products are not linked to that channel sees them only without it (SearchChannel.alternative);
the result's `channel` says which way was searched. verify.channel_id set is never second-guessed.

`--repair` journals the products of every finding again, whole (every variant as last
acknowledged, never half a product), and the missing images after them, as one ledger
"file", then sends them through the normal drain.

    result = run_verify(pipeline, repair=False)
    print(result.summary())
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.batches import make_batches
from connector.channels import SETTING as CHANNEL_SETTING
from connector.channels import SETTING_NAME, SearchChannel, choose, list_channels, resolve
from connector.common import endpoint_parts, iso_utc, write_json_atomic
from connector.model import Product
from connector.report import Report
from connector.wire import encode

if TYPE_CHECKING:
    from connector.api import ApiClient
    from connector.ledger import Ledger
    from connector.pipeline import Pipeline

log = logging.getLogger("connector.verify")

STATE_FILE = "verify.json"  # the latest result, in the state folder: `status` and health show it
FINDINGS_LOGGED = 20
FIELDS = ("price", "qty", "sku", "title")  # what is compared with what was last sent (verify.fields)


# -- what was acknowledged (the one place verify reads the ledger) -------------------------

def acknowledged(ledger: Ledger, endpoint: str,
                 product_codes: Iterable[str] | None = None) -> Iterator[tuple[str, str, dict]]:
    """(product code, variant code, item) for the last acknowledged item of every variant this
    endpoint holds (the ledger's catalogue), retired items left out (a deleted variant is not
    expected to be there)."""
    for v in ledger.catalogue_variants(endpoint, product_codes):
        if str(v.item["source"].get("product_active", "true")).lower() not in ("false", "0", ""):
            yield v.product_code, v.variant_code, v.item


def acknowledged_images(ledger: Ledger, endpoint: str,
                        product_codes: Iterable[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(product code, image job fields) for every image of the catalogue of this endpoint
    (`ImageJob` as a dict: path, sha256, image_id, source_variant_code, ...).

    The catalogue keeps each image's content hash; where the picture came from is read from the
    image job that sent it, while the ledger still holds its body (`retention.days`). Without
    it the path is empty: verify still finds the image missing, a repair names it as gone."""
    images = list(ledger.catalogue_images(endpoint, product_codes))
    if not images:
        return
    wanted = {(i.product_code, i.image_id) for i in images}
    jobs: dict[tuple[str, str], dict] = {}
    for (payload,) in ledger.db.execute(
            "SELECT jobs.payload FROM jobs JOIN files ON files.id = jobs.file_id"
            " WHERE jobs.kind = 'image' AND jobs.state = 'done' AND files.endpoint = ? AND jobs.payload != 'null'"
            " ORDER BY jobs.id", (endpoint,)):
        job = json.loads(payload)
        key = (job.get("source_product_code"), job.get("image_id"))
        if key in wanted:
            jobs[key] = job  # the latest one wins
    for image in images:
        job = jobs.get((image.product_code, image.image_id))
        if job is None or job.get("sha256") != image.sha256:
            job = {"source_product_code": image.product_code, "source_variant_code": image.variant_code,
                   "image_id": image.image_id, "sha256": image.sha256, "path": ""}
        yield image.product_code, job


def products_of_files(ledger: Ledger, endpoint: str, sha256s: Iterable[str]) -> set[str]:
    """The products (and products of images) journaled for the files with these contents."""
    codes: set[str] = set()
    for sha256 in set(sha256s):
        for kind, payload in ledger.db.execute(
                "SELECT jobs.kind, jobs.payload FROM jobs JOIN files ON files.id = jobs.file_id"
                " WHERE files.sha256 = ? AND files.endpoint = ? AND jobs.payload != 'null'", (sha256, endpoint)):
            data = json.loads(payload)
            if kind == "image":
                codes.add(data["source_product_code"])
            else:
                codes.update(item["source"]["source_product_code"] for item in data)
    return codes


# -- the result ------------------------------------------------------------------------------

@dataclass
class Finding:
    """One difference between what was acknowledged and what Stock2Shop holds.

    kind  missing_product | missing_variant | differs | missing_image
    """

    kind: str
    product: str
    variant: str | None = None
    field: str | None = None
    expected: Any = None
    found: Any = None
    image_id: str | None = None

    def line(self) -> str:
        if self.kind == "missing_product":
            return f"product {self.product}: not in Stock2Shop ({self.expected} variant(s) acknowledged)"
        if self.kind == "missing_variant":
            return f"product {self.product}, variant {self.variant}: not in Stock2Shop"
        if self.kind == "missing_image":
            return f"product {self.product}: image {self.image_id} not in Stock2Shop"
        where = f"variant {self.variant}" if self.variant else "product"
        return f"product {self.product}, {where}: {self.field} is {self.found!r}, last sent {self.expected!r}"


@dataclass
class VerifyResult:
    """What one verify found; `repair` says what was sent again (None without --repair)."""

    endpoint: str
    started_at: float
    finished_at: float | None = None
    products_checked: int = 0
    variants_checked: int = 0
    images_checked: int = 0
    products_waiting: int = 0  # journaled and not yet acknowledged: checked after they are
    requests: int = 0
    findings: list[Finding] = field(default_factory=list)
    repair: dict[str, Any] | None = None
    channel: SearchChannel | None = None  # what the searches went through (None: nothing to search)
    unseen: dict[str, Any] | None = None  # the search could not see the products: why, and what to set
    repair_asked: bool = False

    @property
    def counts(self) -> dict[str, int]:
        counts = {"missing_products": 0, "missing_variants": 0, "differing": 0, "missing_images": 0}
        key = {"missing_product": "missing_products", "missing_variant": "missing_variants",
               "differs": "differing", "missing_image": "missing_images"}
        for finding in self.findings:
            counts[key[finding.kind]] += 1
        return counts

    @property
    def clean(self) -> bool:
        return not self.findings and self.unseen is None

    def outcome(self) -> str:
        """The key of cli.EXIT_CODES: done (clean, or all repaired), mismatch (found and not repaired,
        or a repair that could not send something), waiting (repair work left in the ledger) or
        unseen (the search could not see the products: a setting to change, nothing repaired)."""
        if self.unseen is not None and not self.unseen.get("resent"):
            return "unseen"
        if self.repair is not None:
            if self.repair.get("waiting"):
                return "waiting"
            return "mismatch" if self.repair.get("problems") else "done"
        return "done" if self.clean else "mismatch"

    def summary(self) -> str:
        c = self.counts
        head = (f"verify: {self.products_checked} products, {self.variants_checked} variants, "
                f"{self.images_checked} images checked against Stock2Shop in {self.requests} requests")
        if self.channel is not None:
            head += f", searching {self.channel.describe()}"
        if self.products_waiting:
            head += f"; {self.products_waiting} products still waiting in the ledger (not checked)"
        if self.unseen is not None and self.unseen.get("resent"):
            head += (f"\n  the search saw none of the {self.unseen['products']} products "
                     "(--resend-unseen: every one of them is sent again)")
        elif self.unseen is not None:
            lines = [head, f"  could not see the products: {self.unseen['reason']}",
                     "  nothing is reported missing" + ("; --repair sent nothing (it would have sent every product "
                                                        "again)" if self.repair_asked else "")]
            return "\n".join(lines)
        if self.clean:
            return head + "\n  all there, as last sent"
        lines = [head, f"  missing: {c['missing_products']} products, {c['missing_variants']} variants, "
                       f"{c['missing_images']} images; differing: {c['differing']} fields"]
        lines += [f"  - {f.line()}" for f in self.findings[:FINDINGS_LOGGED]]
        if len(self.findings) > FINDINGS_LOGGED:
            lines.append(f"  ... and {len(self.findings) - FINDINGS_LOGGED} more (see the report)")
        if self.repair is not None:
            r = self.repair
            lines.append(f"  repair: {r['products']} products ({r['items']} items) and {r['images']} images "
                         f"journaled again; sent {r['items_sent']} items and {r['images_sent']} images"
                         + ("; the rest waits in the ledger" if r.get("waiting") else ""))
            lines += [f"  - not repaired: {p}" for p in r.get("problems", [])[:FINDINGS_LOGGED]]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "verify",
            "endpoint": endpoint_parts(self.endpoint)[0],
            "source_id": endpoint_parts(self.endpoint)[1],
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at or self.started_at),
            "clean": self.clean,
            "outcome": self.outcome(),
            "channel": None if self.channel is None else self.channel.to_json(),
            "unseen": self.unseen,
            "checked": {"products": self.products_checked, "variants": self.variants_checked,
                        "images": self.images_checked, "products_waiting": self.products_waiting},
            "counts": self.counts,
            "requests": self.requests,
            "findings": [{k: v for k, v in asdict(f).items() if v is not None} for f in self.findings],
            "repair": self.repair,
        }


# -- comparing (pure) ------------------------------------------------------------------------

def compare(expected: dict[str, dict[str, dict]], images: dict[str, list[dict]],
            stored: dict[str, dict], fields: Iterable[str] = FIELDS) -> list[Finding]:
    """Findings for `expected` (code -> variant code -> last acknowledged item) and `images`
    (code -> image jobs, each with "md5" of its bytes when the file is still readable) against
    `stored` (code -> the product as the API holds it: variants a list, images a list), on `fields`.

        compare({"A": {"A-1": item}}, {}, {})  ->  [Finding("missing_product", "A", expected=1)]
    """
    findings: list[Finding] = []
    variant_fields = [name for name in ("price", "qty", "sku") if name in fields]
    for code, variants in expected.items():
        product = stored.get(code)
        if product is None:
            findings.append(Finding("missing_product", code, expected=len(variants)))
            findings += [Finding("missing_image", code, i.get("source_variant_code"), image_id=i["image_id"])
                         for i in images.get(code, [])]
            continue
        held = {str(v.get("source_variant_code")): v for v in product.get("variants") or [] if isinstance(v, dict)}
        last_title = None
        for variant_code, item in variants.items():
            last_title = item["product"].get("title", last_title)
            variant = held.get(variant_code)
            if variant is None:
                findings.append(Finding("missing_variant", code, variant_code))
                continue
            sent = item["product"]["variants"]
            for name in variant_fields:
                if name in sent and not _same(name, sent[name], variant.get(name)):
                    findings.append(Finding("differs", code, variant_code, name, sent[name], variant.get(name)))
        if "title" in fields and last_title is not None and not _same("title", last_title, product.get("title")):
            findings.append(Finding("differs", code, None, "title", last_title, product.get("title")))
        present = product.get("images") or []
        for image in images.get(code, []):
            if not any(_is(image, held_image) for held_image in present if isinstance(held_image, dict)):
                findings.append(Finding("missing_image", code, image.get("source_variant_code"),
                                        image_id=image["image_id"]))
    return findings


def _is(image: dict, held: dict) -> bool:
    """The stored image is this one: by the image id the connector gave it, or by its bytes' md5."""
    if held.get("source_image_code") not in (None, "") and str(held["source_image_code"]) == image["image_id"]:
        return True
    return bool(image.get("md5")) and str(held.get("hash") or "").lower() == image["md5"]


def _same(name: str, sent: Any, held: Any) -> bool:
    """Equal as the API stores the field: numbers as numbers (qty whole and never below 0,
    api-docs and reference §1.3), text as text, blank as null."""
    if sent in (None, "") or held in (None, ""):
        return sent in (None, "") and held in (None, "")
    if name in ("price", "qty"):
        try:
            a, b = float(sent), float(held)
        except (TypeError, ValueError):
            return str(sent) == str(held)
        if name == "qty":
            return max(0, int(a)) == max(0, int(b))
        return abs(a - b) < 1e-6
    return str(sent) == str(held)


# -- asking the API ----------------------------------------------------------------------------

def fetch_stored(client: ApiClient, codes: list[str], *, page_size: int,
                 source_id: int | None, channel_id: int | None = None) -> tuple[dict[str, dict], int]:
    """The stored products among `codes` (code -> product), and how many requests that took.

    `page_size` codes per request (and as many hits per page); a page holding more hits (the
    same codes in another source) is paged on with `from`. Products of another source are left out.
    `channel_id` goes with every search (see connector/channels.py).
    """
    stored: dict[str, dict] = {}
    requests = 0
    for start in range(0, len(codes), page_size):
        chunk = codes[start:start + page_size]
        offset = 0
        while True:
            answer = client.search_products({
                "query": {"bool": {"filter": [{"terms": {"source_product_code": chunk}}]}},
                "size": page_size, "from": offset}, channel_id=channel_id)
            requests += 1
            products = [p for p in answer.get("system_products") or [] if isinstance(p, dict)]
            for product in products:
                theirs = product.get("source_id")
                if theirs not in (None, "") and source_id is not None and str(theirs) != str(source_id):
                    continue
                stored.setdefault(str(product.get("source_product_code")), product)
            offset += page_size
            if not products or offset >= _total(answer):
                break
    return stored, requests


def _total(answer: dict) -> int:
    total = (answer.get("hits") or {}).get("total", 0)
    if isinstance(total, dict):  # Elasticsearch 7: {"value": n, "relation": "eq"}
        total = total.get("value", 0)
    try:
        return int(total)
    except (TypeError, ValueError):
        return 0


def _with_md5(image: dict) -> dict:
    """The image job with the md5 of its bytes (how the API names a stored image), when the file
    is still there unchanged; without it otherwise."""
    try:
        data = Path(image["path"]).read_bytes()
    except OSError:
        return image
    if hashlib.sha256(data).hexdigest() != image.get("sha256"):
        return image
    return {**image, "md5": hashlib.md5(data).hexdigest()}


# -- the whole run -------------------------------------------------------------------------------

def verify(ledger: Ledger, client: ApiClient, endpoint: str, *, source_id: int | None, page_size: int,
           product_codes: Iterable[str] | None = None, fields: Iterable[str] = FIELDS,
           channel_id: int | None = None, channel: SearchChannel | None = None,
           clock=time.time) -> tuple[VerifyResult, dict, dict]:
    """Compare what `endpoint` had acknowledged (all of it, or only `product_codes`) with what the
    API holds, searching through `channel` (chosen from the setting `channel_id` when not given).
    Returns the result and what it compared (code -> variant -> item; code -> images),
    which a repair sends again. Raises ApiUnavailable / FatalError from the client."""
    result = VerifyResult(endpoint=endpoint, started_at=clock())
    waiting = ledger.pending_products(endpoint)
    expected: dict[str, dict[str, dict]] = {}
    for code, variant, item in acknowledged(ledger, endpoint, product_codes):
        if code in waiting:
            continue
        expected.setdefault(code, {})[variant] = item
    images: dict[str, list[dict]] = {}
    for code, image in acknowledged_images(ledger, endpoint, list(expected)):
        images.setdefault(code, []).append(_with_md5(image))
    result.products_waiting = len(waiting if product_codes is None else waiting & set(product_codes))
    if expected:
        result.channel = channel or resolve(client, channel_id)
    through = None if result.channel is None else result.channel.channel_id
    stored, result.requests = fetch_stored(client, list(expected), page_size=page_size, source_id=source_id,
                                           channel_id=through)
    result.products_checked = len(expected)
    result.variants_checked = sum(len(v) for v in expected.values())
    result.images_checked = sum(len(i) for i in images.values())
    if expected and not stored and result.channel is not None:
        others = [] if product_codes is None else _others(ledger, endpoint, set(expected) | waiting, page_size)
        seen = _sees(client, result.channel, others, page_size=page_size, source_id=source_id)
        tried = None if seen else result.channel.alternative()
        if tried is not None:
            found = fetch_stored(client, list(expected), page_size=page_size, source_id=source_id,
                                 channel_id=tried.channel_id)[0]
            if found or _sees(client, tried, others, page_size=page_size, source_id=source_id):
                log.info("verify searches %s: searching %s found none of the %d products", tried.describe(),
                         _briefly(result.channel), len(expected))
                result.channel, stored, seen, tried = tried, found, True, None
        if not seen:
            result.unseen = unseen(client, result.channel, len(expected), others, page_size=page_size,
                                   source_id=source_id, also=tried)
    if result.unseen is None:
        result.findings = compare(expected, images, stored, list(fields))
    result.finished_at = clock()
    return result, expected, images


def unseen(client: ApiClient, channel: SearchChannel, missing: int, others: list[str], *,
           page_size: int, source_id: int | None,
           also: SearchChannel | None = None) -> dict[str, Any] | None:
    """Why the search could not see the products when it found none of the `missing` ones, or None
    when that means they are missing indeed.

    `others` (products of the catalogue beyond those checked, up to a page) were looked for already,
    in vain (the caller's `_sees`): they count with the missing ones. One product looked for and
    not found is missing (unless the search went without a channel among several): sending one
    again is cheap, and it is just what a queue that lost one item looks like. `also`: the other
    way searched (SearchChannel.alternative), which saw none either."""
    if missing + len(others) < 2 and channel.how not in ("several", "unlisted"):
        return None
    if channel.channels is None and channel.how == "configured":  # for the message: which ones there are
        channel = choose(channel.channel_id, list_channels(client))
    listing = channel.listing()
    resend = (f"`connector verify --repair --resend-unseen` sends the {missing} products again "
              f"(`connector push --full FILE` sends a file's products again)")
    if also is not None and channel.how in ("only", "without_only"):  # every way this account can search
        advice = (f"check that Stock2Shop shows them: both ways this account can search (its only channel, "
                  f"and without a channel) saw none, so unless it does, the queue lost them: {resend}")
    elif channel.how in ("configured", "only"):
        advice = (f"if Stock2Shop does show them, that channel does not reach them; set {CHANNEL_SETTING} to "
                  f"the account's channel that holds them: {listing}")
        if channel.how == "configured":  # unset, verify searches without a channel when its own choice sees none
            advice += (f" (an admin whose products are not linked to a channel sees them only without one: "
                       f"leave {SETTING_NAME} unset)")
    elif channel.how == "several":
        advice = (f"a user that is not an admin finds products only through a channel; set {CHANNEL_SETTING} "
                  f"to the one that holds them: {listing}")
    else:
        advice = (f"check that Stock2Shop shows them, and whether this user's role needs a channel to search "
                  f"({CHANNEL_SETTING}; `connector sources` lists the channels: {listing})")
    if also is None or channel.how not in ("only", "without_only"):
        advice += f"; if Stock2Shop does not show them either, the queue lost them: {resend}"
    nor = "" if also is None else f", nor searching {_briefly(also)}"
    reason = (f"none of the {missing} products acknowledged was found searching {channel.describe()}{nor}; "
              f"{advice}")
    return {"products": missing, "reason": reason, "channels": [
        {"id": c.get("id"), "description": c.get("description")} for c in channel.channels or ()]}


def _sees(client: ApiClient, channel: SearchChannel, codes: list[str], *, page_size: int,
          source_id: int | None) -> bool:
    """Whether searching through `channel` finds any of `codes` (none asked for: False)."""
    return bool(codes) and bool(fetch_stored(client, codes, page_size=page_size, source_id=source_id,
                                             channel_id=channel.channel_id)[0])


def _briefly(channel: SearchChannel) -> str:
    """'without a channel' or 'through channel 5': how a search went, in a few words."""
    return "without a channel" if channel.channel_id is None else f"through channel {channel.channel_id}"


def some_products(ledger: Ledger, endpoint: str, limit: int) -> list[str]:
    """Up to `limit` active products of `endpoint`'s catalogue (the ledger's), to check a sample."""
    return _others(ledger, endpoint, set(), limit)


def _others(ledger: Ledger, endpoint: str, besides: set[str], limit: int) -> list[str]:
    """Up to `limit` active products of `endpoint`'s catalogue not in `besides`."""
    codes: list[str] = []
    cursor = ledger.db.execute(
        "SELECT DISTINCT product_code, json_extract(item, '$.source.product_active') FROM catalogue_variants"
        " WHERE endpoint = ?", (endpoint,))
    for code, active in cursor:
        if code not in besides and code not in codes and str(active if active is not None else "true").lower() \
                not in ("false", "0", ""):
            codes.append(code)
            if len(codes) >= limit:
                break
    return codes


def repair(pipeline: Pipeline, result: VerifyResult, expected: dict[str, dict[str, dict]],
           images: dict[str, list[dict]]) -> dict[str, Any]:
    """Journal the products of every finding again (whole, as last acknowledged) and the missing
    images after them, as one ledger file, then drain the ledger. Returns what was sent."""
    codes = list(dict.fromkeys(f.product for f in result.findings if f.kind != "missing_image"))
    missing = {(f.product, f.image_id) for f in result.findings if f.kind == "missing_image"}
    products = [Product(code, list(expected[code].values()), [], []) for code in codes]
    batches = make_batches(products, max_items=pipeline.settings.batch.max_items,
                           max_bytes=pipeline.settings.batch.max_bytes) if products else []
    batch_of = {item["source"]["source_product_code"]: i for i, batch in enumerate(batches) for item in batch}
    image_jobs = [(batch_of.get(code), {k: v for k, v in image.items() if k != "md5"})
                  for code, jobs in images.items() for image in jobs if (code, image["image_id"]) in missing]
    items = sum(len(b) for b in batches)
    done = {"products": len(codes), "items": items, "images": len(image_jobs),
            "items_sent": 0, "images_sent": 0, "waiting": False, "problems": []}
    if not batches and not image_jobs:
        return done
    now = pipeline.clock()
    report = Report(file=f"verify-repair {iso_utc(now)}", started_at=now)
    report.sha256 = hashlib.sha256(encode([batches, [job for _, job in image_jobs]])).hexdigest()
    report.size = 0
    report.counts.products, report.counts.variants = len(codes), items
    report.counts.items_to_send, report.counts.images_to_send = items, len(image_jobs)
    ledger = pipeline.ledger
    file_id = ledger.journal(report, mtime_ns=0, endpoint=pipeline.endpoint, batches=batches, images=image_jobs)
    log.info("verify: journaled %d products (%d items) and %d images again", len(codes), items, len(image_jobs))
    pipeline.drain()  # the normal drain: what the API does not take now waits in the ledger, as any push's
    states = ledger.file_job_states(file_id)
    sent = ledger.file_sent_counts(file_id)
    done.update(items_sent=sent["items_sent"], images_sent=sent["images_sent"],
                waiting=any(state == "pending" for _, state in states),
                problems=[p.reason if not p.product else f"{p.product}: {p.reason}" for p in ledger.problems(file_id)])
    return done


def run_verify(pipeline: Pipeline, *, repair_too: bool = False, product_codes: Iterable[str] | None = None,
               channel: SearchChannel | None = None, resend_unseen: bool = False) -> VerifyResult:
    """Verify through `pipeline`'s ledger and client (and repair with `repair_too`), keep the
    result in the state folder for `status`, and return it. `channel`: the one an earlier run
    chose (`result.channel`), else chosen now from verify.channel_id and the account's channels.
    `resend_unseen` (with `repair_too`, asked for by a person who saw that Stock2Shop lacks them): a
    search that saw none of the products takes them as missing, and they are all sent again."""
    settings = pipeline.settings
    if repair_too:
        pipeline.drain()  # work still waiting (an earlier repair cut short) goes first, then is checked
    baseline = sum(pipeline.client.requests.values())
    result, expected, images = verify(pipeline.ledger, pipeline.client, pipeline.endpoint,
                                      source_id=settings.api.source_id, page_size=settings.verify.page_size,
                                      product_codes=product_codes, fields=settings.verify.fields,
                                      channel_id=settings.verify.channel_id, channel=channel,
                                      clock=pipeline.clock)
    result.requests = sum(pipeline.client.requests.values()) - baseline
    result.repair_asked = repair_too
    if repair_too and resend_unseen and result.unseen is not None:
        result.unseen["resent"] = True  # the search saw none (stored is empty): every product is missing
        result.findings = compare(expected, images, {}, list(settings.verify.fields))
    if repair_too and result.findings:
        result.repair = repair(pipeline, result, expected, images)
    result.finished_at = pipeline.clock()
    keep_latest(settings.folders.state, result)
    return result


def keep_latest(state_dir: Path, result: VerifyResult) -> None:
    """The result as the state folder's latest verify (best effort: status only reads it)."""
    try:
        write_json_atomic(Path(state_dir) / STATE_FILE, result.to_json(), mode=0o600)
    except OSError as exc:
        log.warning("cannot keep the verify result in %s: %s", state_dir, exc)


def latest(state_dir: Path) -> dict | None:
    """The last verify result kept in the state folder, or None."""
    try:
        data = json.loads((Path(state_dir) / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def one_line(data: dict | None) -> str:
    """A kept verify result in one line, for `status` and health."""
    if not data:
        return "never run"
    c = data.get("counts") or {}
    when = data.get("finished_at", "?")
    if data.get("unseen") and not data["unseen"].get("resent"):
        return (f"at {when}: could not see the {data['unseen'].get('products', 0)} products in Stock2Shop, "
                f"nothing reported missing: {data['unseen'].get('reason', '')}")
    if data.get("clean"):
        return f"clean at {when} ({(data.get('checked') or {}).get('products', 0)} products checked)"
    text = (f"at {when}: missing {c.get('missing_products', 0)} products, {c.get('missing_variants', 0)} variants, "
            f"{c.get('missing_images', 0)} images; {c.get('differing', 0)} fields differ")
    repaired = data.get("repair")
    if repaired:
        text += f"; repaired: {repaired.get('items_sent', 0)} items and {repaired.get('images_sent', 0)} images sent"
    else:
        text += "; run `connector verify --repair` to send them again"
    return text
