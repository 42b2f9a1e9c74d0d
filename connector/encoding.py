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
   the file differently but as cleanly and either there is little to judge by or the first
   candidate was not the one chosen, or when a later candidate was chosen on little to judge
   by (MIN_EVIDENCE, MIN_BYTES); the reader then warns and says how to set `source.encoding`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_LEGACY = ("cp1252", "mac_roman", "cp1250", "latin-1")
MAX_STRAY_LINES = 16  # a damaged UTF-8 file (NULs, BOM remains) has stray bytes on at most this many lines
MIXED = 20  # the minority evidence at 1/MIXED of the majority or more makes the choice uncertain
MARGIN = 0.02  # charset-normalizer mess ratios closer than this are a tie
# Little to judge by: fewer accented characters than this in the sample's distinct words, and
# fewer bytes than MIN_BYTES in the file that are not UTF-8; a close or late choice is then uncertain.
MIN_EVIDENCE = 8
MIN_BYTES = 64
SAMPLE_WORDS = 4000  # distinct words holding a byte above 0x7F, at most
SAMPLE_MATCHES = 8_000  # non-ASCII runs looked at for words, at most (spread over the whole file)

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
    # a UTF-8 byte-order mark before legacy text (a tool added it): not part of the first column's name
    return _choose_legacy(data[3:] if bom else data, tuple(candidates), valid, bad, good_lines, bad_lines)


def _lines(count: int) -> str:
    return f"{count:,} {'line holds' if count == 1 else 'lines hold'}"


_NON_ASCII = re.compile("[^\x00-\x7f]+")
_ESCAPE = re.compile("[\udc80-\udcff]")  # an invalid byte, as the surrogateescape handler keeps it
_LINE_END = re.compile("[\r\n]")  # a Mac export ends its lines with CR alone
SLICES = 64  # the file is looked at in this many evenly spaced slices...
RUNS_PER_SLICE = 1000  # ...counting at most this many runs of non-ASCII characters in each


MIN_SLICE = 64 * 1024  # a smaller file is one slice


def _slice_size(size: int) -> int:
    return max(size // SLICES, MIN_SLICE)


def _slices(size: int) -> range:
    """The starts of at most SLICES evenly spaced slices of a text or file of `size` (bounded samples)."""
    return range(0, size, _slice_size(size))


def _line_counts(escaped: str) -> tuple[int, int]:
    """(lines holding only well-formed UTF-8 beyond ASCII, lines holding an invalid byte).

    Lines, not bytes: a UTF-8 file with a few damaged records has its bad bytes in a few
    lines, however many; a legacy file has them on most lines with an accent, and the few
    byte pairs that happen to be valid UTF-8 rarely make a line of their own. A bounded
    sample of a big file: the first RUNS_PER_SLICE runs of non-ASCII characters in each of
    SLICES slices, so every line is counted in a file with few accents.
    """
    good = bad = 0
    step = _slice_size(len(escaped))
    line_end = -1  # a line may run on into the next slice: it is still one line
    line_good = line_bad = False
    for begin in _slices(len(escaped)):
        for looked, run in enumerate(_NON_ASCII.finditer(escaped, begin, begin + step)):
            if looked >= RUNS_PER_SLICE:
                break
            start = run.start()
            if start > line_end:  # a new line: count the one before
                good += line_good and not line_bad
                bad += line_bad
                line_good = line_bad = False
                found = _LINE_END.search(escaped, start)
                line_end = found.start() if found else len(escaped)
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
        thin = evidence < MIN_EVIDENCE and bad < MIN_BYTES
        uncertain = mixed or (bool(others) and (thin or not by_order)) or (thin and not by_order)
        return Choice(chosen, _legacy_reason(not_utf8, chosen, candidates, mess, others, by_order), uncertain=uncertain,
                      others=others), text
    return Choice(candidates[0], f"{not_utf8}; no legacy_encoding candidate reads it"), None


def _legacy_reason(not_utf8: str, chosen: str, candidates: tuple[str, ...], mess: dict[str, float],
                   others: tuple[str, ...], by_order: bool) -> str:
    scores = ", ".join(f"{name} {_score(mess.get(name))}" for name in candidates)
    how = "the first candidate" if by_order else "the candidate reading its accented text most cleanly"
    also = f"; {', '.join(others)} read it about as cleanly" if others else ""
    return f"{not_utf8}; {chosen} is {how} (mess by charset-normalizer: {scores}){also}"


def _score(mess: float | None) -> str:
    if mess is None:
        return "cannot decode it"
    return "garbled" if mess == float("inf") else f"{mess:.2f}"


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

    ASCII reads the same in every candidate, so only these words tell code pages apart. They
    are taken from the whole file, not its first kilobytes: at most SAMPLE_MATCHES // SLICES
    non-ASCII runs from each of SLICES evenly spaced slices, up to SAMPLE_WORDS words or
    SAMPLE_BYTES in all.
    """
    words: dict[bytes, None] = {}
    size = 0
    step = _slice_size(len(data))
    for begin in _slices(len(data)):
        for looked, match in enumerate(_HIGH.finditer(data, begin, begin + step)):
            if looked >= SAMPLE_MATCHES // SLICES:
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
            if len(words) >= SAMPLE_WORDS or size >= SAMPLE_BYTES:
                return b" ".join(words)
    return b" ".join(words)


def _mess(sample: bytes, encoding: str) -> float:
    """charset-normalizer's mess ratio of the sample read in `encoding` (inf: too messy to rank)."""
    from charset_normalizer import from_bytes  # imported here: UTF-8 files never need it

    matches = from_bytes(sample, cp_isolation=[encoding], steps=1, chunk_size=max(len(sample), 1), threshold=1.0,
                         preemptive_behaviour=False, enable_fallback=False)
    best = matches.best()
    return best.chaos if best is not None else float("inf")
