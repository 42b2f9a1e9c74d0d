"""`connector watch`: the service's lifetime around the loop.

    serve(settings, lambda: Pipeline(settings, client, ledger))

`serve` takes the state folder's lock, turns SIGTERM/SIGINT into a stop request (restoring the
previous handlers on the way out), starts health, the status page (connector.web), the alerts
(connector.notify) and the pipeline's worker thread, opens a
read-side ledger handle for health figures, runs the `Watcher` until stopped, and closes it all.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings
from connector.errors import ConfigError
from connector.health import Health
from connector.lock import AlreadyRunning, StateLock
from connector.notify import Notifier
from connector.watch.loop import HEARTBEAT_S, Watcher
from connector.watch.observer import choose_observer
from connector.watch.worker import Abandoned, Worker, wait_for
from connector.web import StatusServer

if TYPE_CHECKING:
    from connector.pipeline import Pipeline


def serve(settings: Settings, make_pipeline: Callable[[], Pipeline], *, stop: threading.Event | None = None,
          clock: Clock = SYSTEM_CLOCK, log: logging.Logger | None = None,
          retry_base: float = 5.0, retry_cap: float = 300.0, heartbeat: float = HEARTBEAT_S,
          make_inbox: bool = False) -> None:
    """Run the file-drop service until `stop` is set (or SIGTERM/SIGINT).

    Raises AlreadyRunning when another process holds the state folder (one line logged), and
    any FatalError from making the pipeline (a damaged ledger): cli.py turns them into exit codes.
    `make_pipeline` is called once, after the state lock is taken. `retry_base`/`retry_cap` bound
    the backoff between attempts to send waiting work, to read a mapping again and to retry a
    file set aside; `heartbeat` is how often health is refreshed while waiting or busy.
    `make_inbox`: create the inbox (and its images/ folder) when missing; only for the default
    folders of a run without connector.yaml. A configured inbox is never created: it may be a
    share that is not mounted yet, and a local folder under the mount point would be watched
    instead.
    """
    log = log or logging.getLogger("connector.watch")
    stop = stop or threading.Event()
    restore = _install_signal_handlers(stop)
    try:
        with StateLock(settings.folders.state, "watch"):
            _serve_locked(settings, make_pipeline, stop=stop, clock=clock, log=log,
                          retry_base=retry_base, retry_cap=retry_cap, heartbeat=heartbeat, make_inbox=make_inbox)
    except AlreadyRunning as exc:
        log.error("%s", exc, extra={"event": "already_running"})
        raise
    finally:
        restore()


def _serve_locked(settings: Settings, make_pipeline: Callable[[], Pipeline], *, stop: threading.Event,
                  clock: Clock, log: logging.Logger, retry_base: float, retry_cap: float,
                  heartbeat: float, make_inbox: bool) -> None:
    folders = settings.folders
    _make_folders(settings, make_inbox, log)
    kind, why = choose_observer(settings.watch.observer, folders.inbox)
    log.info("watching %s every %.0f s with the %s observer (%s)", folders.inbox, settings.watch.scan_interval,
             kind, why, extra={"event": "start", "observer": kind})
    _warn_if_not_same_filesystem(folders.inbox, folders.processing, log)
    health = Health(settings.watch.health_file, log=log, clock=clock)
    pipelines: list[Pipeline] = []
    page = _start_page(settings, health, lambda: _rate_in_use(pipelines), log)
    notifier = _start_notifier(settings, health, clock, log)
    worker = Worker()
    ledger = None
    try:
        pipeline = wait_for(worker.submit(make_pipeline), stop, clock=clock)
        pipelines.append(pipeline)
        ledger = _open_ledger(folders.state, log)
        watcher = Watcher(settings, pipeline, worker, stop=stop, clock=clock, log=log, retry_base=retry_base,
                          retry_cap=retry_cap, health=health, observer_kind=kind, ledger=ledger, heartbeat=heartbeat)
        watcher.on_file_failed = notifier.file_failed if notifier is not None else None
        try:
            watcher.run()
        finally:
            watcher.observer.stop()
        closing = worker.submit(pipeline.close)
        try:
            clock.result(closing, 2.0)
        except Exception:  # noqa: BLE001 - closing is best effort; SQLite needs no close to stay sound
            pass
        log.info("stopped after %d file(s)", watcher.files_done, extra={"event": "stop"})
    except Abandoned:
        log.warning("stopped while a request was still in flight; its work is in the ledger and "
                    "resumes at the next start", extra={"event": "stop_abandoned"})
    finally:
        worker.shutdown()
        if page is not None:
            page.stop()
        if notifier is not None:
            notifier.stop()
        if ledger is not None:
            ledger.close()


def _start_page(settings: Settings, health: Health, rate: Callable[[], float | None],
                log: logging.Logger) -> StatusServer | None:
    """The status page and /healthz on watch.http_port, when set; a port that cannot be bound
    stops the start-up with a message (exit code 2), as any other setting that cannot work."""
    w = settings.watch
    if w.http_port is None:
        return None
    if w.health_port is not None:
        log.warning("watch.health_port is the old name of watch.http_port: rename it in connector.yaml "
                    "(it now serves the status page too)", extra={"event": "config_warning"})
    page = StatusServer(settings, health, rate=rate, log=log)
    try:
        page.start()
    except OSError as exc:
        raise ConfigError([f"watch.http_port: cannot serve the status page on {w.http_host}:{w.http_port}: "
                           f"{exc.strerror or exc}"]) from None
    return page


def _start_notifier(settings: Settings, health: Health, clock: Clock, log: logging.Logger) -> Notifier | None:
    if not settings.notify.webhook_url:
        return None
    notifier = Notifier(settings.notify, clock=clock, log=log)
    notifier.start()
    health.listeners.append(notifier.observe)
    return notifier


def _rate_in_use(pipelines: list[Pipeline]) -> float | None:
    """Requests per second the API client allows now (it follows x-S2S-RateLimit)."""
    client = getattr(pipelines[0], "client", None) if pipelines else None
    rate = getattr(getattr(client, "limiter", None), "rate", None)
    return float(rate) if isinstance(rate, int | float) else None


def _make_folders(settings: Settings, make_inbox: bool, log: logging.Logger) -> None:
    """Create the folders the service works in, and say in one line where they all are.

    processing/, archive/ and failed/ are always created (the state folder was, with the lock);
    the inbox and its images/ only with `make_inbox` (see `serve`). A missing inbox that is not
    ours to create gets one warning naming it; the loop then keeps looking for it.
    """
    folders = settings.folders
    images = folders.images or folders.inbox / "images"
    wanted = [folders.processing, folders.archive, folders.failed]
    if make_inbox:
        wanted = [folders.inbox, *([images] if folders.images is None else []), *wanted]
    made = []
    for folder in wanted:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            made.append(folder.name)
    where = {"inbox": folders.inbox, "images": images, "processing": folders.processing,
             "archive": folders.archive, "failed": folders.failed, "state": folders.state}
    log.info("folders: %s%s", ", ".join(f"{name} {os.path.abspath(path)}" for name, path in where.items()),
             f" (created: {', '.join(made)})" if made else "",
             extra={"event": "folders", "folders_created": made,
                    "folders": {name: os.path.abspath(path) for name, path in where.items()}})
    if not make_inbox and not folders.inbox.exists():
        log.warning("the configured inbox %s does not exist; the connector never creates it (it may be a share "
                    "not mounted yet): mount or create it, the service looks for it meanwhile",
                    os.path.abspath(folders.inbox), extra={"event": "inbox_missing"})


def _open_ledger(state_dir: Path, log: logging.Logger) -> Any:
    """Our own ledger handle for health figures (SQLite in WAL mode allows a second reader)."""
    try:
        from connector.ledger import Ledger

        return Ledger.open(state_dir)
    except Exception as exc:  # noqa: BLE001 - health figures are optional
        log.warning("cannot open the ledger for health figures: %s", exc)
        return None


def _warn_if_not_same_filesystem(inbox_dir: Path, processing: Path, log: logging.Logger) -> None:
    try:
        if os.stat(inbox_dir).st_dev != os.stat(processing).st_dev:
            log.warning("inbox %s and processing %s are on different filesystems: files cannot be claimed "
                        "by an atomic rename; put processing/ on the same share as the inbox",
                        inbox_dir, processing, extra={"event": "config_warning"})
    except OSError:
        pass  # the inbox is checked again on every scan


def _install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT (SIGBREAK on Windows) set `stop`; only possible on the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    names = ("SIGTERM", "SIGINT", "SIGBREAK")
    previous = {}
    for name in names:
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, lambda _signum, _frame: stop.set())

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
