"""The part of Elasticsearch's bool query the sandbox understands, over plain dicts.

    search(docs, {"query": {"bool": {"filter": [{"range": {"modified": {"gt": "2026-01-01"}}},
                                                 {"terms": {"variants.sku": ["A", "B"]}}]}},
                  "sort": {"modified": {"order": "asc"}}, "from": 0, "size": 50})
    -> (total, page)

Supported clauses inside bool.filter / bool.must: term, terms, range (gt, gte, lt, lte), and
match_all; bool.must_not takes the same. A dotted field ("variants.sku") matches when any
element of a list on the way matches. Anything else raises QueryError naming the clause.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_SIZE = 10000


class QueryError(ValueError):
    """A query the sandbox does not understand; the message says which part."""


def search(docs: list[dict], body: Any) -> tuple[int, list[dict]]:
    """Filter, sort and page `docs` by an Elasticsearch-style `body`; returns (total, page)."""
    if not isinstance(body, dict):
        raise QueryError("the body must be a JSON object")
    query = body.get("query") or {"match_all": {}}
    _check(query)
    hits = [doc for doc in docs if _matches(doc, query)]
    for field, order in reversed(_sort_keys(body.get("sort"))):
        hits.sort(key=lambda doc: _sortable(_values(doc, field)), reverse=order == "desc")
    start, size = _int(body, "from", 0), _int(body, "size", 10)
    if size > MAX_SIZE:
        raise QueryError(f"size may be at most {MAX_SIZE}")
    return len(hits), hits[start:start + size]


def _int(body: dict, key: str, default: int) -> int:
    value = body.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise QueryError(f"{key} must be a whole number, got {value!r}") from None
    if number < 0:
        raise QueryError(f"{key} must not be negative")
    return number


def _sort_keys(sort: Any) -> list[tuple[str, str]]:
    if sort is None:
        return [("id", "asc")]
    entries = sort if isinstance(sort, list) else [sort]
    keys = []
    for entry in entries:
        if isinstance(entry, str):
            keys.append((entry, "asc"))
            continue
        if not isinstance(entry, dict):
            raise QueryError(f"cannot sort by {entry!r}")
        for field, spec in entry.items():
            order = spec.get("order", "asc") if isinstance(spec, dict) else spec
            if order not in ("asc", "desc"):
                raise QueryError(f"sort order must be asc or desc, got {order!r}")
            keys.append((field, order))
    return keys


def _sortable(values: list) -> tuple:
    first = values[0] if values else None
    return (first is None, str(type(first)), first if first is not None else 0)


def _matches(doc: dict, clause: Any) -> bool:
    if not isinstance(clause, dict) or len(clause) != 1:
        raise QueryError(f"a query clause must be an object with one key, got {clause!r}")
    (kind, spec), = clause.items()
    if kind == "match_all":
        return True
    if kind == "bool":
        return _bool(doc, spec)
    if kind in ("term", "terms", "range"):
        if not isinstance(spec, dict) or len(spec) != 1:
            raise QueryError(f"{kind} needs exactly one field, got {spec!r}")
        (field, cond), = spec.items()
        values = _values(doc, field)
        if kind == "term":
            cond = cond.get("value") if isinstance(cond, dict) else cond
            return any(_equal(v, cond) for v in values)
        if kind == "terms":
            if not isinstance(cond, list):
                raise QueryError(f"terms on {field} needs a list")
            return any(_equal(v, c) for v in values for c in cond)
        return any(_in_range(v, cond, field) for v in values)
    raise QueryError(f"the sandbox does not support the {kind!r} query; use bool with term, terms or range")


def _check(clause: Any) -> None:
    """Refuse an unsupported query up front, even when there is nothing to match against."""
    _matches({}, clause)
    if isinstance(clause, dict) and isinstance(clause.get("bool"), dict):
        for key in ("filter", "must", "must_not", "should"):
            value = clause["bool"].get(key, [])
            for inner in value if isinstance(value, list) else [value]:
                _check(inner)


def _bool(doc: dict, spec: Any) -> bool:
    if not isinstance(spec, dict):
        raise QueryError("bool must be an object")
    unknown = set(spec) - {"filter", "must", "must_not", "should", "minimum_should_match"}
    if unknown:
        raise QueryError(f"bool does not support {sorted(unknown)}")
    def listed(key: str) -> list:
        value = spec.get(key, [])
        return value if isinstance(value, list) else [value]
    if not all(_matches(doc, c) for c in listed("filter") + listed("must")):
        return False
    if any(_matches(doc, c) for c in listed("must_not")):
        return False
    should = listed("should")
    return not should or any(_matches(doc, c) for c in should)


def _values(doc: Any, field: str) -> list:
    """Every value at a dotted path, stepping into lists."""
    current: list = [doc]
    for part in field.split("."):
        nxt = []
        for item in current:
            for element in (item if isinstance(item, list) else [item]):
                if isinstance(element, dict) and part in element:
                    nxt.append(element[part])
        current = nxt
    return [v for value in current for v in (value if isinstance(value, list) else [value])]


def _equal(value: Any, wanted: Any) -> bool:
    if isinstance(value, bool) or isinstance(wanted, bool):
        return str(value).lower() == str(wanted).lower()
    return str(value) == str(wanted)


def _in_range(value: Any, cond: Any, field: str) -> bool:
    if not isinstance(cond, dict):
        raise QueryError(f"range on {field} needs an object of gt/gte/lt/lte")
    ops = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
           "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}
    checks: Iterable = [(op, bound) for op, bound in cond.items() if op in ops]
    if value is None:
        return False
    for op, bound in checks:
        a, b = (value, bound) if isinstance(value, (int, float)) and isinstance(bound, (int, float)) \
            else (str(value), str(bound))
        if not ops[op](a, b):
            return False
    return True
