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
from connector.verify import latest, one_line, products_of_files, run_verify
from connector.watch.worker import Abandoned

RETRY_S = 300.0  # a verify that could not run is tried again this much later


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

    def file_pushed(self, report: Report) -> None:
        """Note a file whose work was acknowledged; the first one since the last verify sets its time."""
        sent = report.counts.items_sent + report.counts.images_sent
        if report.status != "done" or not report.sha256 or not sent:
            return
        self.files.append(report.sha256)
        if self.due is None:
            self.due = self.clock.monotonic() + self.after

    def due_in(self) -> float | None:
        return None if self.due is None else max(self.due - self.clock.monotonic(), 0.0)

    def run_if_due(self, call: Callable[..., Any]) -> None:
        """Verify now when it is time, through `call(fn, busy=...)` (the pipeline's own thread)."""
        if self.due is None or self.clock.monotonic() < self.due:
            return
        files, unresolved, repair, channel = list(self.files), set(self.unresolved), self.repair, self.channel
        checked: set[str] = set()

        def check(pipeline: Any) -> Any:
            checked.update(products_of_files(pipeline.ledger, pipeline.endpoint, files) | unresolved)
            return run_verify(pipeline, repair_too=repair, product_codes=checked, channel=channel)

        try:
            result = call(check, busy=f"verifying the products of {len(files)} file(s) pushed")
        except Abandoned:
            raise
        except Exception as exc:  # noqa: BLE001 - the API away or refusing us, or a bug: the service goes on
            self.due = self.clock.monotonic() + RETRY_S
            why = str(exc) if isinstance(exc, ConnectorError) else f"unexpected error: {type(exc).__name__}: {exc}"
            self.log.warning("verify could not run: %s; trying again in %.0f s", redact(why), RETRY_S,
                             extra={"event": "verify_error"})
            return
        self.files.clear()
        self.channel = result.channel or self.channel
        # products the search could not see are checked again with the next verify, as wrong ones are
        self.unresolved = checked if result.unseen else {f.product for f in result.findings}
        self.last = result.to_json()
        # repaired items are checked again once the queue has had time for them
        self.due = self.clock.monotonic() + self.after if (result.repair and result.findings) else None
        level = logging.INFO if result.clean else logging.WARNING
        self.log.log(level, "%s", result.summary(), extra={"event": "verify", "counts": result.counts})

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
