"""The status page as HTML: plain data in (overview.Overview.collect), one page out.

    html = render(view, csrf="…", refresh=10)

Server-rendered, no JavaScript, no external resource (styles inline, the chart is inline SVG),
refreshing itself with a meta refresh. Every value is escaped; the view never holds a secret.
Pure: the same view gives the same page, so tests read it as text.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import quote

from connector.overview import Placed

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:80em}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;
vertical-align:top} th{font-weight:600;background:#f6f6f6} td.n{text-align:right}
.state{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-weight:600}
.ok,.done,.duplicate{background:#2e7d32} .degraded,.waiting{background:#ef6c00} .stale,.refused{background:#c62828}
.status{padding:0 .4em;border-radius:.4em;color:#fff} .grid{display:flex;gap:2em;flex-wrap:wrap}
.grid>div{min-width:16em} .muted{color:#777} .msg{padding:.5em 1em;background:#e3f2fd;border-radius:.3em}
.err{background:#ffebee} progress{width:16em} form{display:inline} button{cursor:pointer}
"""


def render(view: dict[str, Any], *, csrf: str, refresh: int = 10, message: str | None = None,
           error: bool = False) -> str:
    """The whole page; `csrf` goes into every form, `message` is shown once at the top."""
    service, api = view["service"], view["api"]
    state = str(service.get("state") or "unknown")
    parts = [
        f'<h1>Connector <span class="state {escape(state)}">{escape(state)}</span></h1>',
        f'<p class="muted">as of {escape(view["now"])}; this page refreshes every {refresh} s</p>',
    ]
    if message:
        parts.append(f'<p class="msg{" err" if error else ""}" role="status">{escape(message)}</p>')
    parts += [
        '<div class="grid">',
        _service(service),
        _api(api),
        _backlog(view["backlog"]),
        "</div>",
        _working(service.get("busy"), view["working"]),
        _failed(view["failed"], csrf),
        _recent(view["recent"]),
        _chart(view["daily"]),
    ]
    return _document("Connector status", "\n".join(parts), refresh=refresh)


def render_login(*, csrf: str, failed: bool = False) -> str:
    """The login form of a page that needs `watch.http_token`."""
    note = '<p class="msg err" role="alert">That token is not right.</p>' if failed else ""
    body = (f"<h1>Connector status</h1>{note}"
            '<form method="post" action="/login"><p><label>Token of the status page (watch.http_token) '
            '<input type="password" name="token" autocomplete="current-password" autofocus></label> '
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            '<button type="submit">Log in</button></p></form>')
    return _document("Connector status: log in", body, refresh=None)


def _document(title: str, body: str, *, refresh: int | None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}; url=/">' if refresh else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\">{meta}<title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _service(service: dict[str, Any]) -> str:
    problems = service.get("problems") or []
    rows = [("Last scan", service.get("last_scan_at") or "never"),
            ("Updated", service.get("updated_at") or "never"),
            ("Observer", service.get("observer") or "?"),
            ("Files done since start", service.get("files_done") or 0),
            ("In processing/", service.get("processing_files") or 0),
            ("In failed/", service.get("failed_files") or 0)]
    out = ["<div><h2>Service</h2>", _pairs(rows)]
    if problems:
        out.append('<ul class="problems">' + "".join(f"<li>{escape(str(p))}</li>" for p in problems) + "</ul>")
    else:
        out.append('<p class="muted">No problems.</p>')
    return "\n".join([*out, "</div>"])


def _api(api: dict[str, Any]) -> str:
    error = api.get("last_error")
    rate = api.get("rate")
    rows = [("Last success", api.get("last_success_at") or "never"),
            ("Last error", f"{error['message']} (at {error['at']})" if error else "none"),
            ("Rate in use", f"{rate:g} requests/s" if isinstance(rate, int | float) else "not known yet")]
    return f"<div><h2>Stock2Shop API</h2>{_pairs(rows)}</div>"


def _backlog(backlog: dict[str, Any]) -> str:
    age = backlog.get("oldest_age_s")
    rows = [("Product batches waiting", backlog.get("batches", 0)), ("Images waiting", backlog.get("images", 0)),
            ("Oldest waiting", f"{age:.0f} s" if isinstance(age, int | float) else "nothing waits")]
    return f"<div><h2>Backlog</h2>{_pairs(rows)}</div>"


def _working(busy: Any, working: list[dict[str, Any]]) -> str:
    out = ["<h2>Now</h2>"]
    if isinstance(busy, dict) and busy.get("with"):
        out.append(f"<p>Busy with <b>{escape(str(busy['with']))}</b> since {escape(str(busy.get('since')))}</p>")
    elif not working:
        out.append('<p class="muted">Idle: nothing is being pushed.</p>')
    for w in working:
        rows = []
        for label, (done, total) in (("batches", w["batches"]), ("images", w["images"])):
            if total:
                rows.append(f'<p>{label} {done} of {total} <progress max="{total}" value="{done}" '
                            f'aria-label="{escape(w["name"])} {label}">{done}/{total}</progress></p>')
        out.append(f'<div class="working"><b>{escape(w["name"])}</b>{"".join(rows)}</div>')
    return "\n".join(out)


def _failed(rows: list[dict[str, Any]], csrf: str) -> str:
    if not rows:
        return '<h2>Failed files</h2><p class="muted">None waiting in failed/.</p>'
    body = []
    for r in rows:
        data: Placed = r["data"]
        body.append(
            f'<tr class="failed-file"><td>{escape(r["at"])}</td><td>{escape(r["name"])}</td>'
            f'<td class="reason">{escape(r["reason"])}</td><td>{_links(r["links"])}</td>'
            '<td><form method="post" action="/retry">'
            f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
            f'<input type="hidden" name="file" value="{escape(data.relative)}">'
            f'<button type="submit" title="after fixing it: move {escape(r["name"])} back to the inbox">'
            "Put back in the inbox</button></form></td></tr>")
    return ("<h2>Failed files</h2><p class=\"muted\">Fix the file (or the mapping), then put it back: it goes to "
            "the inbox under its original name and is taken again.</p>"
            "<table><tr><th>Failed at</th><th>File</th><th>Reason</th><th>Details</th><th></th></tr>"
            + "".join(body) + "</table>")


def _recent(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<h2>Last files</h2><p class="muted">No file has been filed away yet.</p>'
    body = []
    for r in rows:
        seconds = r["seconds"]
        status = r["status"] if r["area"] == "archive" or r["status"] == "refused" else "refused"
        if r["area"] == "failed" and r["data"] is None:
            status += " (put back)"
        body.append(
            f'<tr class="recent-file"><td>{escape(r["at"])}</td><td>{escape(r["name"])}</td>'
            f'<td><span class="status {escape(status.split()[0])}">{escape(status)}</span></td>'
            f'<td class="n">{r["products"]}</td><td class="n">{r["items_sent"]}</td>'
            f'<td class="n">{r["images_sent"]}</td><td class="n">{r["rows_refused"]}</td>'
            f'<td class="n">{f"{seconds:.1f} s" if isinstance(seconds, int | float) else ""}</td>'
            f"<td>{_links(r['links'])}</td></tr>")
    return ("<h2>Last files</h2><table><tr><th>Time</th><th>File</th><th>Outcome</th><th>Products</th>"
            "<th>Items sent</th><th>Images sent</th><th>Rows refused</th><th>Took</th><th>Details</th></tr>"
            + "".join(body) + "</table>")


def _links(links: dict[str, Placed]) -> str:
    labels = {"report": "report", "csv": "refused rows (CSV)", "xlsx": "refused rows (XLSX)"}
    return " · ".join(f'<a href="{escape(file_url(p))}">{labels[k]}</a>' for k, p in links.items())


def file_url(placed: Placed) -> str:
    return f"/files/{placed.area}/{quote(placed.relative)}"


def _chart(days: list[dict[str, Any]]) -> str:
    """Items and images sent per day, as grouped bars in inline SVG (one scale; the top value named)."""
    width, height, pad = 20 * max(len(days), 1), 120, 18
    top = max([1] + [max(d["items"], d["images"]) for d in days])
    slot = width / max(len(days), 1)
    bars = []
    for i, d in enumerate(days):
        for j, (key, colour) in enumerate((("items", "#1565c0"), ("images", "#f9a825"))):
            h = (height - pad) * d[key] / top
            x = i * slot + 2 + j * (slot - 4) / 2
            bars.append(f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{(slot - 4) / 2:.1f}" '
                        f'height="{h:.1f}" fill="{colour}"><title>{escape(d["day"])}: {d[key]} {key}</title></rect>')
    first, last = (days[0]["day"], days[-1]["day"]) if days else ("", "")
    total_items, total_images = sum(d["items"] for d in days), sum(d["images"] for d in days)
    return (f"<h2>Sent per day, last {len(days)} days</h2>"
            f'<svg role="img" aria-label="items and images sent per day" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<line x1="0" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#999"/>'
            + "".join(bars)
            + f'<text x="0" y="{height - 4}" font-size="10">{escape(first)}</text>'
            f'<text x="{width}" y="{height - 4}" font-size="10" text-anchor="end">{escape(last)}</text>'
            f'<text x="0" y="10" font-size="10">max {top}</text></svg>'
            f'<p><span style="color:#1565c0">■</span> items ({total_items} in all) '
            f'<span style="color:#f9a825">■</span> images ({total_images} in all)</p>')


def _pairs(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows) + "</table>"
