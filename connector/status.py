"""`connector status`: what is waiting, what was done, and what went wrong, for a person.

Safe while `connector watch` runs: it only lists folders, reads the health file and reads the
ledger (SQLite in WAL mode lets a reader in beside the writer). Whether the service runs is
told by the state folder's lock (`connector.lock.holder`), never by the health file's age: a
service that exited leaves a health file that said "ok".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from connector import inbox
from connector.clock import SYSTEM_CLOCK, Clock
from connector.config import Settings
from connector.health import STALE_AFTER_S, parse_utc, read_health
from connector.lock import LOCK_NAME, holder


def render_status(settings: Settings, *, clock: Clock = SYSTEM_CLOCK, sandbox: bool = False) -> str:
    """A few short sections of plain text: service, processing/, ledger, archived, failed, last error.
    Ages are by `clock`'s wall time. `sandbox`: the settings point at the sandbox runs' own state
    folder (see cli._api), and the first line says so."""
    now = clock.time()
    folders = settings.folders
    lines: list[str] = []
    if sandbox:
        lines.append(f"Sandbox runs (--sandbox): their own state folder {folders.state}, started afresh by each "
                     "sandbox push or watch; the real ledger is never used by them")
    lines += _service(folders.state, settings.watch.health_file, now)
    lines += _processing(folders.processing, now)
    ledger_lines, recent = _ledger(folders.state)
    lines += ledger_lines
    lines += _verified(folders.state)
    lines += _placed("Last archived", folders.archive, ".report.json")
    lines += _placed("Last failed", folders.failed, ".error.json", total=inbox.count_files(folders.failed))
    if recent:
        lines.append("Recent files in the ledger:")
        lines += [f"  {r['name']}: {r['status']}" + (f" at {r['finished_at']}" if r.get("finished_at") else "")
                  for r in recent]
    return "\n".join(lines)


def _service(state_dir: Path, health_file: Path | None, now: float) -> list[str]:
    """Whether `connector watch` runs (by the state folder's lock) and, when it does, its health."""
    who = holder(state_dir)
    data = (read_health(health_file) if health_file else None) or {}
    if who.held is None:
        return [f"Service: cannot tell whether it runs: {state_dir / LOCK_NAME} cannot be opened "
                "(run status as the service's user)"]
    if who.held and who.what != "watch":  # a push, or a connector too old to say what it runs
        running = f"connector {who.what}" if who.what else "a connector"
        return [f"Service: not running; {running} (pid {who.pid or '?'}) is using this state folder now"]
    if not who.held:
        line = "Service: not running"
        if data.get("updated_at"):
            line += f" (last seen running at {data['updated_at']})"
        out = [line]
        if who.pid:
            out.append(f"  the last connector {who.what or 'run'} (pid {who.pid}) ended without stopping cleanly "
                       "(killed or crashed); journaled work is sent by the next push or watch")
        return out
    where = "" if who.alive is not False else ", in another container or machine"
    line = f"Service: running (pid {who.pid or '?'}{where}); health: {data.get('state', 'not written yet')}"
    updated = parse_utc(data.get("updated_at"))
    if data and (updated is None or now - updated > STALE_AFTER_S):
        line += f"; not updated since {data.get('updated_at', '?')}: the service is stuck"
    out = [line, f"  last scan: {data.get('last_scan_at') or 'never'}; observer: {data.get('observer', '?')}"]
    busy = data.get("busy")
    if isinstance(busy, dict) and busy.get("with"):
        out.append(f"  busy with {busy['with']} since {busy.get('since', '?')}")
    out += [f"  problem: {p}" for p in data.get("problems") or []]
    return out


def _processing(folder: Path, now: float) -> list[str]:
    files = inbox.list_processing(folder)
    if not files:
        return ["In processing/: nothing"]
    out = [f"In processing/: {len(files)} file(s)"]
    for path in files[:20]:
        try:
            st = path.stat()
            out.append(f"  {path.name} ({st.st_size} bytes, {_age(now - st.st_mtime)} old)")
        except OSError:
            out.append(f"  {path.name}")
    if len(files) > 20:
        out.append(f"  ... and {len(files) - 20} more")
    return out


def _ledger(state_dir: Path) -> tuple[list[str], list[dict[str, Any]]]:
    from connector.errors import LedgerError
    from connector.ledger import Ledger

    if not (state_dir / Ledger.FILE_NAME).exists() and not (state_dir / Ledger.MARKER_NAME).exists():
        return ["Ledger: none yet (nothing has been sent from this state folder; --sandbox runs keep their own: "
                "connector status --sandbox)"], []
    try:
        ledger = Ledger.open(state_dir)
    except LedgerError as exc:
        return [f"Ledger: PROBLEM: {exc}"], []
    try:
        backlog = ledger.backlog()
        error = ledger.last_error()
        success = ledger.last_success_at()
        recent = ledger.recent_files(5)
    finally:
        ledger.close()
    waiting = f"{backlog['batches']} product batch(es), {backlog['images']} image(s) waiting"
    if backlog.get("oldest_age_s") is not None:
        waiting += f", oldest {_age(backlog['oldest_age_s'])}"
    out = [f"Ledger: {waiting}", f"  last successful send: {success or 'never'}"]
    out.append(f"  last API error: {error['message']} (at {error['at']})" if error else "  last API error: none")
    return out, recent


def _verified(state_dir: Path) -> list[str]:
    """The last `connector verify` (by hand or by `watch`), kept in the state folder."""
    from connector.verify import latest, one_line

    return [f"Last verify: {one_line(latest(state_dir))}"]


def _placed(title: str, root: Path, suffix: str, *, total: int | None = None) -> list[str]:
    recent = inbox.recent_sidecars(root, suffix, limit=5)
    heading = f"{title}:" + (f" ({total} file(s) in {root.name}/)" if total is not None else "")
    if not recent:
        return [f"{heading} none"]
    out = [heading]
    for sidecar in recent:
        report = read_health(sidecar) or {}
        name = sidecar.name[: -len(suffix)]
        why = report.get("message") or report.get("status") or ""
        out.append(f"  {name}" + (f": {why}" if why else ""))
    return out


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"
