"""Command line: the only place exceptions become exit codes and one-line messages.

Exit codes (every command), from one table (`EXIT_CODES`):
  0  everything sendable was acknowledged (or nothing needed sending)
  1  the file was refused for data reasons, or the API refused every item it was sent
     (with --strict: any row or item was refused); `verify`: items missing or differing
  2  usage, configuration, mapping or credential error: a person must change the setup
     (`verify`: the search could not see the products, e.g. verify.channel_id to set)
  3  work is left waiting in the ledger (API unreachable); the next run sends it
  4  an unexpected error inside the connector (a bug): journaled work stays in the ledger
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from connector import __version__
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings, load_settings, require_credentials
from connector.errors import ConnectorError, FatalError, RefusedData, RetriableError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_WAITING, EXIT_INTERNAL = 0, 1, 2, 3, 4
SOURCES_RETRY_BUDGET = 20.0  # seconds `connector sources` retries an API that does not answer

# What happened -> the exit code. The only place outcomes become exit codes: a report's
# `outcome()`, or the branch of the exception tree that ended a command.
EXIT_CODES: dict[str, int] = {
    "done": EXIT_OK,
    "duplicate": EXIT_OK,
    "checked": EXIT_OK,
    "refused": EXIT_REFUSED,
    "refused_by_api": EXIT_REFUSED,  # every item sent was refused (e.g. another account's source id)
    "rows_refused": EXIT_REFUSED,    # --strict only
    "mismatch": EXIT_REFUSED,        # verify: acknowledged items missing or differing in Stock2Shop
    "unseen": EXIT_USAGE,            # verify: the search saw none of the products (a channel to set)
    "waiting": EXIT_WAITING,
    "mapping": EXIT_USAGE,
    "setup": EXIT_USAGE,
    # the exception tree's branches, for errors that end a command before a report exists
    FatalError.__name__: EXIT_USAGE,
    RetriableError.__name__: EXIT_WAITING,
    RefusedData.__name__: EXIT_REFUSED,
    "internal": EXIT_INTERNAL,
}


def error_outcome(exc: BaseException) -> str:
    """The key of EXIT_CODES for an exception that ended a command."""
    for branch in (FatalError, RetriableError, RefusedData):
        if isinstance(exc, branch):
            return branch.__name__
    return "internal"

DESCRIPTION = """\
Push ERP product exports (CSV, XLSX, XLS, ODS) to the Stock2Shop API.

Each file is read, mapped with a YAML mapping into Stock2Shop products, checked,
journaled in a local ledger and then sent: products first, then their images.
Nothing acknowledged is sent twice, and nothing journaled is lost if the API or
the machine goes away: the next run resumes.

Try it without credentials:  connector push examples/products.csv --sandbox
"""

EPILOG = """\
exit codes: 0 done, 1 file (or every item) refused for data reasons (verify: items
missing or differing), 2 usage/config/mapping/credentials error, 3 work left waiting in the ledger (API unreachable),
4 unexpected internal error (journaled work stays in the ledger).
configuration: ./connector.yaml (or --config), overridden by S2S_API_URL,
S2S_USERNAME, S2S_PASSWORD, S2S_SOURCE_ID and S2S_STATE_DIR.
"""


def build_parser() -> argparse.ArgumentParser:
    # The options several commands share, each given only to the commands that use it (the
    # README's table of them is checked against every command's --help by a test).
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", type=Path, metavar="FILE",
                        help="settings file (default: ./connector.yaml when it exists)")
    sandbox_api = argparse.ArgumentParser(add_help=False)
    sandbox_api.add_argument("--sandbox", action="store_true",
                             help="run the built-in sandbox API in-process and point the connector at it "
                                  "(no credentials needed; nothing leaves this machine); sandbox runs keep "
                                  "their own ledger in <state>/sandbox, started afresh by each run")
    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                      help="how much to log (default INFO)")
    logs.add_argument("--log-format", default="text", choices=["text", "json"],
                      help="human-readable lines (default) or one JSON object per line for log shippers")
    common = [config, sandbox_api, logs]

    parser = argparse.ArgumentParser(prog="connector", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"connector {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    push = commands.add_parser("push", parents=common, help="push one export file end to end",
                               description="Read, map, check, journal and send one file: products, then images. "
                                           "Writes <name>.report.json (and <name>.rejected.csv and .xlsx when "
                                           "rows were refused) to the report folder.",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("file", type=Path, help="the export to push (CSV, XLSX, XLS or ODS)")
    push.add_argument("--mapping", metavar="NAME_OR_FILE",
                      help="mapping to use (a name from the mappings folder, or a YAML path); "
                           "default: the first `rules` match, else stock2shop")
    push.add_argument("--report-dir", type=Path, default=Path("reports"), metavar="DIR",
                      help="where the report and rejected rows go (default: ./reports)")
    push.add_argument("--full", action="store_true",
                      help="send every item, even those the API acknowledged unchanged before")
    push.add_argument("--strict", action="store_true", help="exit 1 when any row was refused, not only the whole file")
    push.add_argument("--allow-deletions", action="store_true",
                      help="let a complete file (vanished: delete) delete more products than its max_vanished")

    check = commands.add_parser("check", parents=[config, logs],
                                help="read, map and check a file without sending anything",
                                description="Read, map and check one file; print a summary and write the items "
                                            "that would be sent, the report and the rejected rows. No network.")
    check.add_argument("file", type=Path, help="the export to check")
    check.add_argument("--mapping", metavar="NAME_OR_FILE", help="mapping to use (as for push)")
    check.add_argument("--out", type=Path, default=Path("check"), metavar="DIR",
                       help="where <name>.items.json, <name>.report.json and <name>.rejected.csv/.xlsx go "
                            "(default: ./check)")

    watch = commands.add_parser("watch", parents=common,
                                help="run as a service: take every file dropped in the inbox",
                                description="Watch the inbox folder and push every complete file exactly once, "
                                            "oldest first; archive it with its report, or move it to failed/ "
                                            "when it is refused. Stops cleanly on SIGTERM/Ctrl-C. A file's images "
                                            "go in the inbox's images/ folder (or folders.images). Unless "
                                            "connector.yaml names folders.inbox it makes inbox/, inbox/images/, "
                                            "processing/, archive/ and failed/ beside it (or in the current folder); "
                                            "an inbox folders.inbox names is never made (it may be a share not "
                                            "mounted yet). The first log lines name every "
                                            "folder.")
    del watch  # its options are the common ones; the folders come from the settings

    status = commands.add_parser(
        "status", parents=[config], help="whether watch runs, what is waiting, what was done, the last API error",
        description="Show whether `connector watch` is running (by who holds the state folder's lock), files in "
                    "processing/, the ledger backlog, the last files archived and failed, and the last API error. "
                    "Safe while `watch` runs. Prints text; logs nothing.")
    status.add_argument("--sandbox", action="store_true",
                        help="show the state of sandbox runs (push/watch --sandbox: their own ledger in "
                             "<state>/sandbox) instead of the real one")

    commands.add_parser("sources", parents=common,
                        help="log in and list your sources and channels; check api.source_id",
                        description="Log in to the Stock2Shop API, list the user's sources and channels, say "
                                    "whether api.source_id (S2S_SOURCE_ID) is one of those sources and what it is, "
                                    "and show the rate limit the API announces. Run it first when setting up: "
                                    "exit 2 names what to fix (the URL, the credentials or the source id).",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

    verify = commands.add_parser(
        "verify", parents=[config, logs],  # no --sandbox: a fresh sandbox holds nothing this ledger acknowledged
        help="check that what the API acknowledged is in Stock2Shop; --repair resends it",
        description="Compare what this source had acknowledged (the ledger) with what Stock2Shop holds "
                    "(POST /v1/products/elastic_search): products and variants missing, price, qty, sku or "
                    "title differing from what was last sent, images missing. The queue is asynchronous, so run "
                    "it some minutes after a push (`watch` does so by itself, verify.after_minutes after each "
                    "file). Searches through verify.channel_id (S2S_VERIFY_CHANNEL_ID), or the account's channel "
                    "when it has exactly one: a user that is not an admin finds nothing without one. Prints a "
                    "summary and writes verify.report.json to the report folder; exit 1 when something is missing "
                    "or differs, exit 2 when the search found none of the products (it could not see them: "
                    "nothing is called missing and --repair sends nothing; the message lists the channels).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    verify.add_argument("--repair", action="store_true",
                        help="journal the products found missing or differing again (whole, every variant as last "
                             "acknowledged) and the missing images after them, and send them")
    verify.add_argument("--resend-unseen", action="store_true",
                        help="--repair, and when the search saw none of the products (exit 2 without this), take "
                             "them all as missing and send every one again; for when Stock2Shop shows that it "
                             "lacks them (the queue lost them all), never for a search that cannot see them")
    verify.add_argument("--report-dir", type=Path, default=Path("reports"), metavar="DIR",
                        help="where verify.report.json goes (default: ./reports)")

    show = commands.add_parser("show", parents=[config], help="what the catalogue holds for a product or SKU",
                               description="Show the item(s) of a product (or of the product holding a variant "
                                           "code or SKU) as the API last acknowledged them from this source, which "
                                           "files and mappings set them and when, its images, and the rows waiting "
                                           "for it. Reads the ledger read-only: safe while `watch` runs.")
    show.add_argument("code", help="a product code, variant code or SKU")
    show.add_argument("--json", action="store_true", help="print JSON instead of text")

    sandbox = commands.add_parser("sandbox", parents=[logs], help="serve the built-in sandbox Stock2Shop API",
                                  description="Serve a local, strict Stock2Shop API for trying the connector "
                                              "and for tests. Log in with demo/demo; source id 1.")
    from connector.sandbox.cli import add_arguments

    add_arguments(sandbox)
    return parser


def main(argv: list[str] | None = None, *, clock: Clock = SYSTEM_CLOCK) -> int:
    """Run one command; returns its exit code. `clock` paces the API client (and the --sandbox
    API) and times the watch service; tests pass a fake one. Logging and signal handlers are as
    they were when it returns, so it can be called again in the same process."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # status prints and logs nothing of its own: errors still get one line, at the default level
    with _logging(getattr(args, "log_level", "INFO"), getattr(args, "log_format", "text")):
        if args.command == "sandbox":
            from connector.sandbox.cli import run

            return run(args)
        return _run(args, parser, clock)


@contextlib.contextmanager
def _logging(level: str, fmt: str) -> Iterator[None]:
    """Our log handler on the root logger for one command; what was there before comes back after,
    so `main` can be called again in the same process (tests, embedding)."""
    from connector.logs import setup_logging

    root, urllib3 = logging.getLogger(), logging.getLogger("urllib3")
    saved = list(root.handlers), root.level, urllib3.level
    setup_logging(level, fmt)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        urllib3.setLevel(saved[2])


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, clock: Clock) -> int:
    try:
        settings = load_settings(args.config, os.environ)
        if args.command == "check":
            return _check(args, settings)
        sandbox = getattr(args, "sandbox", False)  # only the commands that offer --sandbox have it
        if sandbox:
            _use_sandbox_state(settings)
        if args.command == "status":
            from connector.status import render_status

            print(render_status(settings, sandbox=sandbox))
            return EXIT_OK
        if args.command == "show":
            return _show(args, settings)
        with _api(settings, sandbox, clock):
            if args.command == "push":
                return _push(args, settings, clock)
            if args.command == "watch":
                return _watch(settings, clock, sandbox=sandbox)
            if args.command == "sources":
                return _sources(settings, clock)
            if args.command == "verify":
                return _verify(args, settings, clock)
    except KeyboardInterrupt:
        print("interrupted; journaled work stays in the ledger and is sent on the next run", file=sys.stderr)
        return EXIT_WAITING
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, never a traceback, never a secret
        return _fail_with(exc, journals=args.command in JOURNALING)
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


# -- commands ------------------------------------------------------------------------------

def _push(args, settings: Settings, clock: Clock) -> int:
    from connector.lock import StateLock
    from connector.report import summarise, write_report_files

    if not args.file.is_file():
        return _fail(EXIT_USAGE, f"{args.file}: no such file")
    require_credentials(settings)
    with StateLock(settings.folders.state, "push"):
        pipeline = _make_pipeline(settings, clock, full=args.full, progress=_progress_bar(), fresh=args.sandbox,
                                  allow_deletions=args.allow_deletions, stage=_stage_line(args.file))
        try:
            report = pipeline.run_file(args.file, mapping=args.mapping)
        finally:
            pipeline.close()
            _end_progress()

    args.report_dir.mkdir(parents=True, exist_ok=True)
    report_path = write_report_files(report, args.report_dir / args.file.name)
    summary = summarise(report)
    print(summary)
    print(f"report: {report_path}")
    if report.message and report.message not in summary:  # "x.csv: done" is the summary's first line already
        print(report.message)
    return EXIT_CODES[report.outcome(strict=args.strict)]


def _check(args, settings: Settings) -> int:
    from connector.common import file_identity
    from connector.errors import MappingError, ReadError
    from connector.pipeline import foresee_joins, plan_file
    from connector.report import Report, summarise, write_report_files
    from connector.wire import encode

    if not args.file.is_file():
        return _fail(EXIT_USAGE, f"{args.file}: no such file")
    try:
        plan = plan_file(args.file, settings, mapping=args.mapping)
    except MappingError as exc:
        return _fail(EXIT_USAGE, "mapping has errors:", exc.problems)
    except ReadError as exc:
        return _fail(EXIT_REFUSED, f"{args.file.name}: refused: {exc}")
    foresee_joins(plan)  # rows that wait for another file's products are not products of this file alone

    report = plan.fill(Report(file=args.file.name, status="checked"))
    report.sha256, report.size, _ = file_identity(args.file)
    if plan.refused:
        report.fail("refused", "data", "no row of the file could be sent")
    args.out.mkdir(parents=True, exist_ok=True)
    # The body the API would get, one item per line: valid JSON, diffable, greppable, and
    # written a product at a time (never the whole file's text in memory), a MiB per system
    # call (the default 8 KiB made 10,000 calls of 100k items: 0.1 s).
    with open(args.out / f"{args.file.name}.items.json", "wb", buffering=1 << 20) as out:
        out.write(b'{"system_products": [')
        lead = b"\n"
        for product in plan.products:
            if product.items:
                out.write(lead + b",\n".join(encode(item) for item in product.items))
                lead = b",\n"
        out.write(b"\n]}\n")
    write_report_files(report, args.out / args.file.name)
    print(summarise(report))
    print(f"items that would be sent, report and rejected rows: {args.out}/")
    return EXIT_CODES[report.outcome()]


def _show(args, settings: Settings) -> int:
    import json

    from connector.pipeline import endpoint_of
    from connector.show import find, render

    found = find(settings.folders.state, endpoint_of(settings), args.code)
    print(json.dumps(found, indent=2, ensure_ascii=False) if args.json else render(found))
    return EXIT_OK if found["products"] or found["waiting"] else EXIT_REFUSED


def _watch(settings: Settings, clock: Clock, *, sandbox: bool = False) -> int:
    from connector.watch import serve

    require_credentials(settings)
    # The default folders are the user's to have: made here. An inbox named in connector.yaml or
    # the environment is never made (an unmounted share must not be replaced by a local folder).
    serve(settings, lambda: _make_pipeline(settings, clock, fresh=sandbox), clock=clock,
          make_inbox=not settings.inbox_configured)
    return EXIT_OK


def _sources(settings: Settings, clock: Clock) -> int:
    from connector.api import ApiClient
    from connector.config import ConfigError
    from connector.sources import look_up, render

    missing = [f"{name} is not set (or run with --sandbox to try the built-in sandbox API)"
               for name, value in (("S2S_USERNAME (api.username)", settings.api.username),
                                   ("S2S_PASSWORD (api.password)", settings.api.password)) if not value]
    if missing:
        raise ConfigError(missing)
    # A setup check answers within seconds: an address nobody answers at is reported, not waited for.
    settings.api.retry_budget = min(settings.api.retry_budget, SOURCES_RETRY_BUDGET)
    client = ApiClient(settings.api, sleep=clock.sleep, clock=clock.monotonic)
    account = look_up(client, settings.api.source_id, settings.verify.channel_id)
    print(render(account))
    if account.problem:
        raise ConfigError([account.problem])
    print(f"api.source_id {settings.api.source_id} can be pushed to.")
    return EXIT_OK


def _verify(args, settings: Settings, clock: Clock) -> int:
    from connector.common import write_json_atomic
    from connector.lock import StateLock
    from connector.verify import run_verify

    require_credentials(settings)
    with StateLock(settings.folders.state, "verify"):
        repairing = args.repair or args.resend_unseen
        pipeline = _make_pipeline(settings, clock, progress=_progress_bar() if repairing else None)
        try:
            result = run_verify(pipeline, repair_too=repairing, resend_unseen=args.resend_unseen)
        finally:
            pipeline.close()
            if repairing:
                _end_progress()
    args.report_dir.mkdir(parents=True, exist_ok=True)
    report_path = args.report_dir / "verify.report.json"
    write_json_atomic(report_path, result.to_json())
    print(result.summary())
    print(f"report: {report_path}")
    return EXIT_CODES[result.outcome()]


# -- wiring ----------------------------------------------------------------------------------

def _make_pipeline(settings: Settings, clock: Clock, *, full: bool = False, progress=None, fresh: bool = False,
                   allow_deletions: bool = False, stage=None):
    """The pipeline on the state folder's ledger; called with the state lock held. `fresh`
    (a --sandbox run): the ledger is started afresh first (see `_use_sandbox_state`)."""
    from connector.api import ApiClient
    from connector.ledger import Ledger
    from connector.pipeline import Pipeline

    if fresh:
        _start_afresh(settings.folders.state)
    client = ApiClient(settings.api, sleep=clock.sleep, clock=clock.monotonic)
    return Pipeline(settings, client, Ledger.open(settings.folders.state), full=full, progress=progress,
                    allow_deletions=allow_deletions, stage=stage)


@contextlib.contextmanager
def _api(settings: Settings, sandbox: bool, clock: Clock) -> Iterator[None]:
    """With --sandbox: serve the sandbox in-process and point the settings at it."""
    if not sandbox:
        yield
        return
    from connector.sandbox import Sandbox, SandboxConfig

    with Sandbox(SandboxConfig(clock=clock.monotonic)) as sb:
        settings.api.url = sb.url
        settings.api.username, settings.api.password, settings.api.source_id = "demo", "demo", 1
        logging.getLogger("connector").info("sandbox API at %s (user demo, source 1); ledger %s, started afresh",
                                            sb.url, settings.folders.state)
        yield


SANDBOX_STATE = "sandbox"


def _use_sandbox_state(settings: Settings) -> None:
    """Point a --sandbox run at the sandbox runs' own state folder, `<state>/sandbox`.

    Always a ledger of its own: work journaled for the real API must never be drained into the
    sandbox, and the real ledger must not learn of products only the sandbox holds. It is in a
    known place (not a temporary folder) so that `connector status --sandbox` can show it, and
    each sandbox push or watch starts it afresh (`_start_afresh`): a fresh sandbox API knows no
    products, so nothing may be skipped as sent before.
    """
    real = settings.folders.state
    settings.folders.state = real / SANDBOX_STATE
    if settings.watch.health_file == real / "health.json":
        settings.watch.health_file = settings.folders.state / "health.json"


def _start_afresh(state: Path) -> None:
    """Forget a sandbox state folder's ledger, watch attempts and last verify (the lock is held:
    nobody uses them)."""
    from connector import verify
    from connector.ledger import Ledger

    for name in (Ledger.FILE_NAME, f"{Ledger.FILE_NAME}-wal", f"{Ledger.FILE_NAME}-shm", Ledger.MARKER_NAME,
                 "attempts.json", verify.STATE_FILE):
        (state / name).unlink(missing_ok=True)


def _progress_bar():
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        total = max(total, done, 1)
        filled = int(30 * done / total)
        sys.stderr.write(f"\r\033[Ksending [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} requests")
        sys.stderr.flush()

    return show


def _stage_line(path: Path):
    """On a terminal, what happens before the first request: "reading products.csv ...", "mapping ..."."""
    if not sys.stderr.isatty():
        return None

    def show(stage: str) -> None:
        sys.stderr.write(f"\r\033[K{stage} {path.name} ...")
        sys.stderr.flush()

    return show


def _end_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")


JOURNALING = ("push", "watch", "verify")  # the commands that journal work: their errors say it is kept


def _fail_with(exc: Exception, *, journals: bool = True) -> int:
    """An error that ended a command: its exit code from the table, and one line (or its list).
    `journals`: the command journals work, so the message says that work is kept."""
    from connector.config import ConfigError
    from connector.errors import LedgerError, MappingError
    from connector.logs import redact

    code = EXIT_CODES[error_outcome(exc)]
    if isinstance(exc, ConfigError):
        return _fail(code, "configuration has errors:", exc.problems)
    if isinstance(exc, MappingError):
        return _fail(code, "mapping has errors:", exc.problems)
    if isinstance(exc, LedgerError):  # the ledger itself is the trouble: the message says what to do
        return _fail(code, str(exc))
    if isinstance(exc, FatalError):
        return _fail(code, f"{exc} (any journaled work stays in the ledger; fix this and run again)" if journals
                     else f"{exc} (fix this and run again)")
    if isinstance(exc, ConnectorError):
        return _fail(code, str(exc))
    if isinstance(exc, OSError):  # a disk full, a folder read-only: the path and the system's own reason
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(EXIT_USAGE, f"{where}{exc.strerror or exc} (fix this and run again; any journaled work "
                                 "stays in the ledger)")
    logging.getLogger("connector").debug("unexpected error", exc_info=True)
    return _fail(code, f"unexpected error: {type(exc).__name__}: {redact(str(exc))} "
                       "(journaled work stays in the ledger; run with --log-level DEBUG for details)")


def _fail(code: int, message: str, details: list[str] | None = None) -> int:
    print(f"connector: {message}", file=sys.stderr)
    for line in details or []:
        print(f"  - {line}", file=sys.stderr)
    return code
