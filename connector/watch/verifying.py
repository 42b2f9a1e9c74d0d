"""`watch` verifies what it pushed: `verify.after_minutes` after a file was pushed, the products
of the files pushed since the last verify are checked against Stock2Shop (connector/verify.py).

    schedule = VerifySchedule(settings, clock, log)
    schedule.file_pushed(report)             # after a file is archived
    schedule.run_if_due(call)                # in the loop: call(fn, busy=...) runs fn on the worker
    schedule.due_in()                        # how long the loop may sleep
    schedule.summary(), schedule.problem()   # for health and `status`

The first file pushed sets the time; files pushed before it comes are verified with it (a
file every few minutes never postpones the check). Products found missing or differing are
checked again with the next run until they are right; with `verify.repair` they are sent again
at once and checked again `after_minutes` later. A verify whose search could not see the products
(a channel to set, connector/channels.py) sends nothing, is a problem in health, and its products
are checked again with the next run; the channel chosen by the first run is kept for the next.

When the service starts and the last verify (kept in the state folder, by `watch` or by hand)
was not clean, its products are checked again soon: at the first quiet moment (a cycle with no
file ready or on its way in the inbox; files always go first), at the latest RECHECK_QUIET_MAX_S
after the start, and at most RECHECK_PAGES search pages of them (the rest wait for the next
verify). So a person who fixed verify.channel_id (or the products) and restarted sees the
result without waiting for the next file. With nothing named in the last result (one that
could not see the products) a page of the catalogue is checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from connector.channels import SearchChannel
from connector.clock import Clock
from connector.config import Settings
from connector.errors import ConnectorError
from connector.logs import redact
from connector.report import Report
from connector.verify import VerifyResult, latest, one_line, products_of_files, run_verify, some_products
from connector.watch.worker import Abandoned

RETRY_S = 300.0  # a verify that could not run is tried again this much later
RECHECK_QUIET_MAX_S = 120.0  # the check after start waits for a quiet moment at most this long
RECHECK_PAGES = 5  # the check after start looks at most this many pages (verify.page_size) of products


class VerifySchedule:
    """When `watch` verifies next and what; the last result for health. Driven by the loop's thread."""

    def __init__(self, settings: Settings, clock: Clock, log: logging.Logger):
        self.after = settings.verify.after_minutes * 60.0
        self.repair = settings.verify.repair
        self.clock = clock
        self.log = log
        self.files: list[str] = []  # sha256 of the files pushed since the last verify
        self.unresolved: set[str] = set()  # products the last verify found wrong: checked again
        self.due: float | None = None
        self.last: dict[str, Any] | None = latest(settings.folders.state)
        self.channel: SearchChannel | None = None  # chosen by the first verify, kept (it says so once)
        self.page_size = settings.verify.page_size
        # the last verify before this start was not clean: its products are checked again soon
        self.recheck: set[str] = set()
        self.recheck_at: float | None = None  # not before (None: nothing to check again)
        self.recheck_by = 0.0  # from then on without waiting for a quiet moment
        if self.last is not None and not self.last.get("clean"):
            self.recheck = {str(f["product"]) for f in self.last.get("findings") or []
                            if isinstance(f, dict) and f.get("product") not in (None, "")}
            self._recheck_from(clock.monotonic())

    def file_pushed(self, report: Report) -> None:
        """Note a file whose work was acknowledged; the first one since the last verify sets its time."""
        sent = report.counts.items_sent + report.counts.images_sent
        if report.status != "done" or not report.sha256 or not sent:
            return
        self.files.append(report.sha256)
        if self.due is None:
            self.due = self.clock.monotonic() + self.after

    def due_in(self) -> float | None:
        """How long until a verify may be due (the loop sleeps no longer)."""
        now = self.clock.monotonic()
        dues = [] if self.due is None else [self.due]
        if self.recheck_at is not None:  # once its time came, the loop's cycles look for a quiet moment
            dues.append(self.recheck_at if now < self.recheck_at else self.recheck_by)
        return None if not dues else max(min(dues) - now, 0.0)

    def run_if_due(self, call: Callable[..., Any], *, quiet: bool = True) -> None:
        """Verify now when it is time, through `call(fn, busy=...)` (the pipeline's own thread): the
        check after start once its time came and the service is `quiet` (no file ready or on its
        way) or has waited RECHECK_QUIET_MAX_S, else the products of the files pushed `after` ago."""
        now = self.clock.monotonic()
        if self.recheck_at is not None and now >= self.recheck_at and (quiet or now >= self.recheck_by):
            self._run_recheck(call)
        elif self.due is not None and now >= self.due:
            self._run_pushed(call)

    def _run_pushed(self, call: Callable[..., Any]) -> None:
        files, unresolved = list(self.files), set(self.unresolved)
        result, checked = self._verify(call, lambda pipeline: products_of_files(
            pipeline.ledger, pipeline.endpoint, files) | unresolved,
            f"verifying the products of {len(files)} file(s) pushed")
        if checked is None:
            self.due = self.clock.monotonic() + RETRY_S
            return
        self.files.clear()
        if result is None:  # nothing of them left to check
            self.due = None
            return
        # products the search could not see are checked again with the next verify, as wrong ones are
        self.unresolved = checked if result.unseen else {f.product for f in result.findings}
        # repaired items are checked again once the queue has had time for them
        self.due = self.clock.monotonic() + self.after if (result.repair and result.findings) else None

    def _run_recheck(self, call: Callable[..., Any]) -> None:
        """Check again (some of) the products of the last verify before this start, which was not clean."""
        limit = self.page_size * RECHECK_PAGES
        named = sorted(self.recheck)
        wanted, rest = set(named[:limit]), set(named[limit:])
        self.log.info("the last verify was not clean (%s); checking %s again now that the service runs",
                      one_line(self.last), f"its {len(wanted)} products" if wanted else "a page of the catalogue",
                      extra={"event": "verify_recheck"})
        page, fresh = self.page_size, list(self.files)

        def codes(pipeline: Any) -> set[str]:
            # products of files pushed since the start wait for their own verify (the queue needs time)
            recent = products_of_files(pipeline.ledger, pipeline.endpoint, fresh)
            if wanted:
                return wanted - recent
            sample = some_products(pipeline.ledger, pipeline.endpoint, page + len(recent))
            return set([code for code in sample if code not in recent][:page])

        result, checked = self._verify(call, codes, "checking again the products of the last verify")
        if checked is None:
            self._recheck_from(self.clock.monotonic() + RETRY_S)
            return
        self.recheck, self.recheck_at = set(), None
        if result is None:  # nothing to check now: those pushed again are checked with their file's verify
            self.unresolved |= wanted | rest
            return
        self.unresolved |= rest | (checked if result.unseen else {f.product for f in result.findings})
        if result.repair and result.findings and self.due is None:
            self.due = self.clock.monotonic() + self.after

    def _recheck_from(self, moment: float) -> None:
        self.recheck_at, self.recheck_by = moment, moment + RECHECK_QUIET_MAX_S

    def _verify(self, call: Callable[..., Any], codes: Callable[[Any], set[str]],
                busy: str) -> tuple[VerifyResult | None, set[str] | None]:
        """Run one verify of `codes(pipeline)` on the pipeline's thread, keep and log its result, and
        return it with the products checked: (None, None) when it could not run (said in the
        log), (None, empty) when there was nothing to check (the last result kept)."""
        repair, channel = self.repair, self.channel
        checked: set[str] = set()

        def check(pipeline: Any) -> Any:
            checked.update(codes(pipeline))
            if not checked:
                return None
            return run_verify(pipeline, repair_too=repair, product_codes=checked, channel=channel)

        try:
            result = call(check, busy=busy)
        except Abandoned:
            raise
        except Exception as exc:  # noqa: BLE001 - the API away or refusing us, or a bug: the service goes on
            why = str(exc) if isinstance(exc, ConnectorError) else f"unexpected error: {type(exc).__name__}: {exc}"
            self.log.warning("verify could not run: %s; trying again in %.0f s", redact(why), RETRY_S,
                             extra={"event": "verify_error"})
            return None, None
        if result is None:
            return None, checked
        self.channel = result.channel or self.channel
        self.last = result.to_json()
        level = logging.INFO if result.clean else logging.WARNING
        self.log.log(level, "%s", result.summary(), extra={"event": "verify", "counts": result.counts})
        return result, checked

    def summary(self) -> str:
        return one_line(self.last)

    def problem(self) -> str | None:
        """A line for health when the last verify found something it did not repair."""
        if self.last and self.last.get("unseen"):
            return (f"verify {one_line(self.last)} (nothing was sent again; the next verify checks "
                    "them again)")
        if not self.last or self.last.get("clean") or self.last.get("repair"):
            return None
        return (f"verify found items missing or differing in Stock2Shop {one_line(self.last)} (stop the service "
                "for that, or set verify.repair: true to have it send them)")
