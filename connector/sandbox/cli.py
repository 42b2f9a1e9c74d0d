"""`connector sandbox`: run the local Stock2Shop API until Ctrl-C or SIGTERM.

The main CLI wires it as:

    parser = subparsers.add_parser("sandbox", help=...)
    add_arguments(parser); parser.set_defaults(run=run)
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import yaml

from connector.sandbox.server import Sandbox
from connector.sandbox.settings import RETRY_AFTER_CHOICES, Faults, SandboxConfig

DESCRIPTION = """\
Run a local stand-in for the Stock2Shop API on your own machine. It checks products and
images as strictly as the real API, keeps everything in memory (nothing is written to
disk), and can misbehave on purpose (errors, 429 bursts, slow answers, dropped
connections, expiring tokens) so you can watch the connector cope. Point the connector at
the printed URL. Inspect what arrived at <URL>/_sandbox/state; empty it with
POST <URL>/_sandbox/reset."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sandbox's options to `parser` (a subcommand parser)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    where = parser.add_argument_group("where it listens")
    where.add_argument("--host", default="127.0.0.1",
                       help="address to listen on; keep the default 127.0.0.1 so only this machine "
                            "can reach it (default: %(default)s)")
    where.add_argument("--port", type=int, default=8765,
                       help="port to listen on; 0 picks a free one (default: %(default)s)")

    api = parser.add_argument_group("how the API behaves")
    api.add_argument("--rate", type=float, default=3.0,
                     help="requests per second allowed per token before answering 429 Too Many "
                          "Requests; 3 is the current published limit, use 1 to act like the older "
                          "docs (default: %(default)s)")
    api.add_argument("--unauth-rate", type=float, default=1.0,
                     help="requests per second allowed per client address on the endpoints that need "
                          "no token (login, token check) (default: %(default)s)")
    api.add_argument("--token-lifetime", type=float, default=None, metavar="S",
                     help="seconds a login token stays valid; by default a token lives until the "
                          "same user logs in again")
    api.add_argument("--users", type=Path, default=None, metavar="FILE.yaml",
                     help="YAML file of logins, 'username: password' per line (or under a 'users:' "
                          "key); by default one user, demo with password demo")
    api.add_argument("--channels", type=int, default=1, metavar="N",
                     help="how many channels the users have (GET /v1/channels lists ids 1 to N) "
                          "(default: %(default)s)")
    api.add_argument("--search-needs-channel", action="store_true",
                     help="act as a user that is not an admin: POST /v1/products/elastic_search finds no "
                          "products unless its channel_id query parameter names one of the user's channels")
    api.add_argument("--channel-narrows-search", action="store_true",
                     help="act as an admin whose products are linked to no channel: POST "
                          "/v1/products/elastic_search with a channel_id query parameter finds only the products "
                          "linked to that channel (none: products queued here are linked to no channel); without "
                          "one it finds them all")

    faults = parser.add_argument_group(
        "faults", "Trouble made on purpose, only on the two queue endpoints (products and images). "
                  "The same --seed gives the same faults for the same requests.")
    faults.add_argument("--seed", type=int, default=0,
                        help="seed for the random faults, so a run can be repeated (default: %(default)s)")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="F",
                        help="share of requests (0 to 1) answered 500, 502 or 503 without being "
                             "processed (default: %(default)s)")
    faults.add_argument("--latency", type=float, default=0.0, metavar="S",
                        help="seconds to wait before answering each request (default: %(default)s)")
    faults.add_argument("--drop-rate", type=float, default=0.0, metavar="F",
                        help="share of requests (0 to 1) that ARE processed but then get no answer: the "
                             "connection is just closed, as when a network drops (default: %(default)s)")
    faults.add_argument("--burst-every", type=int, default=0, metavar="N",
                        help="after every N requests, answer a burst of 429s (needs --burst-size)")
    faults.add_argument("--burst-size", type=int, default=0, metavar="K",
                        help="how many requests in a row each 429 burst refuses")
    faults.add_argument("--retry-after", choices=RETRY_AFTER_CHOICES, default="none",
                        help="how burst 429s say when to come back: 'none' sends no Retry-After header, "
                             "'seconds' sends a number of seconds, 'date' an HTTP date (default: %(default)s)")
    faults.add_argument("--retry-after-seconds", type=int, default=1, metavar="S",
                        help="the wait a Retry-After header asks for (default: %(default)s)")
    faults.add_argument("--queue-fail-rate", type=float, default=0.0, metavar="F",
                        help="share of queued items (0 to 1), products and images, acknowledged with 200 "
                             "and then failed by the queue: never stored, as the real asynchronous queue may "
                             "do; `connector verify` finds them (default: %(default)s)")
    faults.add_argument("--anonymous-errors", action="store_true",
                        help="answer a refused products request 400 without naming the bad items")
    faults.add_argument("--expire-after", type=int, default=0, metavar="N",
                        help="a token stops working after N queue requests, so the connector must log "
                             "in again; 0 means never (default: %(default)s)")


def config_from(args: argparse.Namespace) -> SandboxConfig:
    """The SandboxConfig the parsed options describe. Raises ValueError on a bad value."""
    faults = Faults(seed=args.seed, error_rate=args.error_rate, latency=args.latency,
                    drop_rate=args.drop_rate, burst_every=args.burst_every, burst_size=args.burst_size,
                    retry_after=args.retry_after, retry_after_seconds=args.retry_after_seconds,
                    expire_after=args.expire_after, anonymous_errors=args.anonymous_errors,
                    queue_fail_rate=args.queue_fail_rate)
    users = load_users(args.users) if args.users else {"demo": "demo"}
    return SandboxConfig(rate=args.rate, unauth_rate=args.unauth_rate, users=users,
                         token_lifetime=args.token_lifetime, faults=faults, channels=args.channels,
                         search_needs_channel=args.search_needs_channel,
                         channel_narrows_search=args.channel_narrows_search)


def load_users(path: Path) -> dict[str, str]:
    """username -> password from a YAML file; ValueError with the reason when it is not that."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read users file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("users"), dict):
        data = data["users"]
    if not isinstance(data, dict) or not data or \
            not all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in data.items()):
        raise ValueError(f"users file {path} must map each username to a password")
    return {name: str(password) for name, password in data.items()}


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Serve until Ctrl-C or SIGTERM; 0 on a clean stop, 2 on a bad option."""
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"connector sandbox: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    restore = _on_sigterm(stop.set)
    try:
        return _serve(Sandbox(config), args, stop, out)
    finally:
        restore()  # the handler as it was: `run` may be called in a process that goes on (tests, embedding)


def _serve(sandbox: Sandbox, args: argparse.Namespace, stop: threading.Event, out: TextIO) -> int:
    config = sandbox.config
    try:
        sandbox.start(args.host, args.port)
    except OSError as exc:
        print(f"connector sandbox: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    users = ", ".join(f"{name} / {'demo' if name == 'demo' and config.users[name] == 'demo' else '(from file)'}"
                      for name in config.users)
    print(f"Sandbox Stock2Shop API on {sandbox.url}  (source_id {config.source_id})", file=out)
    print(f"Log in as: {users}", file=out)
    if config.search_needs_channel:
        print(f"Product searches find nothing without ?channel_id= (one of {', '.join(map(str, config.channel_ids))})",
              file=out)
    if config.channel_narrows_search:
        print("Product searches with ?channel_id= find only products linked to that channel (none are linked)",
              file=out)
    print(f"State: {sandbox.url}/_sandbox/state   Stop: Ctrl-C", file=out, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    print("Sandbox stopped.", file=out)
    return 0


def _on_sigterm(stop: Callable[[], None]) -> Callable[[], None]:
    """Make SIGTERM call `stop` (main thread only, as Python's signals); returns what puts the
    handler it replaced back."""
    previous = signal.signal(signal.SIGTERM, lambda *_: stop())

    def restore() -> None:
        # None: a handler set outside Python, which cannot be put back; the default is the nearest
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

    return restore


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox on its own: `python -m connector.sandbox.cli --port 8765`."""
    parser = argparse.ArgumentParser(prog="connector sandbox")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
