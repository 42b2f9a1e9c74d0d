"""Which text encoding an 8-bit CSV file is in: UTF-8 (perhaps with a few damaged records) or
one of the configured legacy code pages. Decided on the whole file, never on its first bytes.

    choice, text = choose_encoding(data, ["cp1252", "mac_roman", "cp1250", "latin-1"])
    choice.encoding   -> "mac_roman"
    choice.reason     -> "not UTF-8 (3,012 bytes are not UTF-8; 4 pairs happen to be); ..."
    choice.uncertain  -> False

The rules (docs/read.md, "Encoding"):
1. The file is UTF-8 when at least as many of its lines hold well-formed UTF-8 (and nothing
   worse) as hold a byte that is not UTF-8: those few records are damage, refused with their
   lines (`damaged`). A file with the marks of damage (NUL bytes, the remains of a byte-order
   mark in mid-file) and stray bytes on only a few lines is damaged UTF-8 too, not legacy
   text: its stray bytes are refused rather than read as letters.
2. Otherwise the legacy candidates are judged by charset-normalizer's mess measure on a
   bounded sample: the distinct words holding a byte above 0x7F (ASCII says nothing about the
   code page, so the sample is all signal). The first candidate, in the order configured,
   whose reading is within MARGIN of the cleanest wins; it must then decode the whole file.
   charset-normalizer alone cannot be asked for its "best": it ranks code pages that read a
   text equally cleanly in no useful order (French cp1252 text comes back as cp1250), so the
   configured order breaks ties.
3. The choice is `uncertain` when the evidence is mixed (UTF-8 lines at 1/MIXED of the
   broken ones or more; broken lines close to the clean ones), when another candidate reads
   the file differently but as cleanly and either the sample is small or the first candidate
   was not the one chosen, or when a later candidate was chosen on a small sample; the reader
   then warns and says how to set `source.encoding`.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_LEGACY = ("cp1252", "mac_roman", "cp1250", "latin-1")
MAX_STRAY_LINES = 16  # a damaged UTF-8 file (NULs, BOM remains) has stray bytes on at most this many lines
MIXED = 20  # the minority evidence at 1/MIXED of the majority or more makes the choice uncertain
MARGIN = 0.02  # charset-normalizer mess ratios closer than this are a tie
MIN_EVIDENCE = 8  # non-ASCII characters in the sample below which a close or late choice is uncertain
SAMPLE_WORDS = 4000  # distinct words holding a byte above 0x7F, at most
SAMPLE_MATCHES = 50_000  # words looked at, at most (a bounded sample of a huge file)

_ASCII = bytes(range(128))
# A "word" holding a byte above 0x7F: delimiters, quotes and white space end it.
_WORD = re.compile(rb"[^\s,;|\"'\x00]*[\x80-\xff][^\s,;|\"'\x00]*")


@dataclass(frozen=True)
class Choice:
    """The encoding chosen for a file and why, for the report."""

    encoding: str
    reason: str
    damaged: bool = False  # UTF-8 whose invalid bytes are kept as surrogate escapes (records refused)
    uncertain: bool = False
    others: tuple[str, ...] = field(default=())  # candidates that read the file about as cleanly


def legacy_candidates(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """`legacy_encoding` as given (a name, a list of names, or None for the default list)."""
    if value is None:
        return DEFAULT_LEGACY
    if isinstance(value, str):
        return (value,)
    return tuple(value) or DEFAULT_LEGACY


def choose_encoding(data: bytes, candidates: Sequence[str], *, bom: bool = False) -> tuple[Choice, str | None]:
    """Choose the encoding of `data`, which is not valid UTF-8, and decode it.

    Returns (choice, text); text is None when no candidate decodes the whole file (the
    caller then refuses it, naming the first bad byte of the first candidate).
    `bom`: the file starts with a UTF-8 byte-order mark (kept out of the counts).
    """
    utf8 = "utf-8-sig" if bom else "utf-8"
    # Counted at C speed, whatever the size: bytes above 0x7F, bytes in well-formed UTF-8
    # sequences (what survives encoding the escaped text back without its escapes), the rest.
    escaped = data.decode(utf8, "surrogateescape")  # the BOM, if any, is not in `escaped`
    ascii_bytes = len(data) - len(data.translate(None, _ASCII))
    bad = len(data) - 3 * bom - len(escaped.encode("utf-8", "ignore"))
    valid = len(escaped) - bad - ascii_bytes  # well-formed multi-byte characters
    good_lines, bad_lines = _line_counts(escaped)
    marks = b"\x00" in data or b"\xef\xbb" in data[3:]
    if good_lines >= bad_lines or (marks and bad_lines <= MAX_STRAY_LINES):
        why = (f"UTF-8: {_lines(good_lines)} well-formed UTF-8 and {_lines(bad_lines)} "
               f"bytes that are not ({bad:,}); the records holding those are refused")
        if good_lines < bad_lines:
            why += " (the file holds NUL bytes or the remains of a byte-order mark: it is damaged UTF-8)"
        return Choice(utf8, why, damaged=True, uncertain=bad_lines <= good_lines < 2 * bad_lines), escaped
    del escaped
    return _choose_legacy(data, tuple(candidates), valid, bad, good_lines, bad_lines)


def _lines(count: int) -> str:
    return f"{count:,} {'line holds' if count == 1 else 'lines hold'}"


_NON_ASCII = re.compile("[^\x00-\x7f]+")
_ESCAPE = re.compile("[\udc80-\udcff]")  # an invalid byte, as the surrogateescape handler keeps it
SAMPLE_RUNS = 200_000  # runs of non-ASCII characters looked at to count lines, at most


def _line_end(text: str, start: int) -> int:
    """Where the line holding `start` ends: its LF or CR (a Mac export ends lines with CR alone)."""
    ends = [at for at in (text.find("\n", start), text.find("\r", start)) if at >= 0]
    return min(ends) if ends else len(text)


def _line_counts(escaped: str) -> tuple[int, int]:
    """(lines holding only well-formed UTF-8 beyond ASCII, lines holding an invalid byte).

    Lines, not bytes: a UTF-8 file with a few damaged records has its bad bytes in a few
    lines, however many; a legacy file has them on most lines with an accent, and the few
    byte pairs that happen to be valid UTF-8 rarely make a line of their own. Looks at the
    first SAMPLE_RUNS runs of non-ASCII characters (a bounded sample of a huge file).
    """
    good = bad = 0
    line_end = -1
    line_good = line_bad = False
    for looked, run in enumerate(_NON_ASCII.finditer(escaped)):
        if looked >= SAMPLE_RUNS:
            break
        start = run.start()
        if start > line_end:  # a new line: count the one before
            good += line_good and not line_bad
            bad += line_bad
            line_good = line_bad = False
            line_end = _line_end(escaped, start)
        if _ESCAPE.search(escaped, start, run.end()):
            line_bad = True
        else:
            line_good = True
    return good + (line_good and not line_bad), bad + line_bad


def _choose_legacy(data: bytes, candidates: tuple[str, ...], valid: int, bad: int,
                   good_lines: int = 0, bad_lines: int = 0) -> tuple[Choice, str | None]:
    not_utf8 = (f"not UTF-8 ({bad:,} {'byte is' if bad == 1 else 'bytes are'} not UTF-8"
                + (f"; {valid:,} {'pair happens' if valid == 1 else 'pairs happen'} to be)" if valid else ")"))
    mixed = good_lines * MIXED >= bad_lines > 0 and good_lines > 0  # many lines of UTF-8 too: perhaps a file of both
    if len(candidates) == 1:
        text = _decoded(data, candidates[0])
        return Choice(candidates[0], f"{not_utf8}; legacy_encoding names {candidates[0]}", uncertain=mixed), text
    sample = _sample(data)
    evidence = len(sample.translate(None, _ASCII))
    readings: dict[str, str] = {}
    mess: dict[str, float] = {}
    for name in candidates:
        try:
            readings[name] = sample.decode(name)
        except UnicodeDecodeError:
            continue
        mess[name] = _mess(sample, name)
    remaining = [name for name in candidates if name in mess]
    while remaining:
        cleanest = min(mess[name] for name in remaining)
        chosen = next(name for name in remaining if mess[name] <= cleanest + MARGIN)
        text = _decoded(data, chosen)
        if text is None:  # a byte outside the sample that this code page does not have
            remaining.remove(chosen)
            continue
        others = tuple(name for name in remaining if name != chosen and mess[name] <= mess[chosen] + MARGIN
                       and readings[name] != readings[chosen])
        by_order = chosen == candidates[0]
        thin = evidence < MIN_EVIDENCE
        uncertain = mixed or (bool(others) and (thin or not by_order)) or (thin and not by_order)
        return Choice(chosen, _legacy_reason(not_utf8, chosen, candidates, mess, others, by_order), uncertain=uncertain,
                      others=others), text
    return Choice(candidates[0], f"{not_utf8}; no legacy_encoding candidate reads it"), None


def _legacy_reason(not_utf8: str, chosen: str, candidates: tuple[str, ...], mess: dict[str, float],
                   others: tuple[str, ...], by_order: bool) -> str:
    scores = ", ".join(f"{name} {mess[name]:.2f}" if name in mess and mess[name] != float("inf")
                       else f"{name} unreadable" for name in candidates)
    how = "the first candidate" if by_order else "the candidate reading its accented text most cleanly"
    also = f"; {', '.join(others)} read it about as cleanly" if others else ""
    return f"{not_utf8}; {chosen} is {how} (mess by charset-normalizer: {scores}){also}"


def _decoded(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError:
        return None


_HIGH = re.compile(rb"[\x80-\xff]+")
_TOKEN = re.compile(rb"[^\s,;|\"'\x00]+")
SAMPLE_BYTES = 64 * 1024
_REACH = 32  # bytes looked at either side of a non-ASCII run for the rest of its word


def _sample(data: bytes) -> bytes:
    """The distinct words of `data` that hold a byte above 0x7F, joined by spaces (bounded).

    ASCII reads the same in every candidate, so only these words tell code pages apart; taken
    from the whole file (not its first kilobytes), up to SAMPLE_WORDS words or SAMPLE_BYTES.
    """
    words: dict[bytes, None] = {}
    size = 0
    for looked, match in enumerate(_HIGH.finditer(data)):
        if looked >= SAMPLE_MATCHES or len(words) >= SAMPLE_WORDS or size >= SAMPLE_BYTES:
            break
        start, end = match.span()
        left = max(0, start - _REACH)
        window = data[left:end + _REACH]
        for token in _TOKEN.finditer(window):
            if token.start() <= start - left < token.end():
                word = token.group()
                if word not in words:
                    words[word] = None
                    size += len(word) + 1
                break
    return b" ".join(words)


def _mess(sample: bytes, encoding: str) -> float:
    """charset-normalizer's mess ratio of the sample read in `encoding` (inf: too messy to rank)."""
    from charset_normalizer import from_bytes  # imported here: UTF-8 files never need it

    codecs.lookup(encoding)  # an unknown name was refused when the settings were loaded
    matches = from_bytes(sample, cp_isolation=[encoding], steps=1, chunk_size=max(len(sample), 1), threshold=1.0,
                         preemptive_behaviour=False, enable_fallback=False)
    best = matches.best()
    return best.chaos if best is not None else float("inf")
