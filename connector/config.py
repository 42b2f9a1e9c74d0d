"""Settings from `connector.yaml` plus environment variables, validated once, all errors at once.

    settings = load_settings(Path("connector.yaml"), os.environ)

The settings are defined once, as the pydantic models below: their fields, types, bounds,
choices and descriptions give the defaults, the validation and the published JSON Schema
(`python -m connector.config --schema` writes connector/schema/config.schema.json; a test fails
when the committed file differs). Every problem is reported at once with its place in the file,
"did you mean" for a misspelt key and the valid choices:

    api.pasword: unknown setting; did you mean "password"? (valid choices: url, username, ...)

Relative folders are resolved against the config file's folder, or against the current
directory when there is no config file. Environment variables win over the file:
S2S_API_URL, S2S_USERNAME, S2S_PASSWORD, S2S_SOURCE_ID, S2S_STATE_DIR, S2S_HTTP_TOKEN,
S2S_NOTIFY_WEBHOOK_URL, S2S_VERIFY_CHANNEL_ID. The secrets (the password, the status page's token, the webhook URL) are
kept out of every repr and message, YAML syntax errors included.
"""

from __future__ import annotations

import codecs
import fnmatch
import ipaddress
import json
import re
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic.json_schema import SkipJsonSchema

from connector.common import did_you_mean, published_schema, valid_choices
from connector.encoding import DEFAULT_LEGACY
from connector.errors import ConfigError

DEFAULT_API_URL = "https://app.stock2shop.com"
DEFAULT_PATTERNS = ["*.csv", "*.xlsx", "*.xls", "*.ods"]
HIDDEN = "(hidden)"
OWN_TOKEN = ("watch.http_token: it is the API password; give the status page a token of its own (whoever "
             "opens the page must not learn the API password)")
MIN_TOKEN_LENGTH = 16  # the status page's token: long enough that guessing it over HTTP is hopeless


# --------------------------------------------------------------------------- the definition


class _Section(BaseModel):
    # numbers in YAML are text where text is wanted (a username of digits); unknown keys are errors
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ApiSettings(_Section):
    """The Stock2Shop API and how hard to push it."""

    url: str = Field(default=DEFAULT_API_URL, description="The API's address, http:// or https://.")
    username: str = Field(default="", description="The Stock2Shop user (or S2S_USERNAME).")
    password: str = Field(
        default="",
        repr=False,
        description="The user's password (or S2S_PASSWORD); never shown.",
        json_schema_extra={"writeOnly": True},
    )
    source_id: int | None = Field(
        default=None, description="The Stock2Shop source the products belong to (or S2S_SOURCE_ID)."
    )
    rate: float = Field(
        default=1.0, gt=0, description="Requests per second to start with; raised or lowered by x-S2S-RateLimit."
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a connection.")
    read_timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for a response.")
    request_deadline: float = Field(
        default=120.0, gt=0,
        description="Seconds one request (send, wait, read the answer) may take in all; a server that trickles "
                    "its answer is cut off here and the request retried.",
    )
    retry_budget: float = Field(
        default=300.0, ge=0, description="Seconds one request may keep retrying before its work waits in the ledger."
    )
    retry_after_cap: float = Field(default=120.0, ge=0, description="The longest Retry-After honoured, in seconds.")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} must start with http:// or https://")
        return url


class Folders(_Section):
    """Where files are dropped, worked on and filed away; relative to connector.yaml's folder."""

    inbox: Path = Field(default=Path("inbox"), description="Where the ERP drops its exports.")
    processing: Path = Field(default=Path("processing"), description="Files being worked on.")
    archive: Path = Field(default=Path("archive"), description="Files whose work is acknowledged, with their reports.")
    failed: Path = Field(default=Path("failed"), description="Files refused for a data reason, with the reason.")
    state: Path = Field(default=Path("state"), description="The ledger and health file (or S2S_STATE_DIR).")
    images: Path | None = Field(default=None, description="Image folder (default: an images/ folder beside each file).")
    mappings: Path = Field(
        default=Path("mappings"), description="Your own mappings, searched before the built-in ones."
    )


class BatchSettings(_Section):
    """How products are grouped into requests."""

    max_items: int = Field(
        default=500, ge=1, le=500, description="Items per request; Stock2Shop's own agent sends 500."
    )
    # 2 MiB: below the ~2.7 MB body the image endpoint must already take (a 2 MB image in
    # base64), so a product batch is never the largest body the server sees from us.
    max_bytes: int = Field(default=2 * 1024 * 1024, ge=64 * 1024, description="Bytes per request body.")
    # 3 MiB: just above the largest body the image endpoint must already take (one 2 MB image in
    # base64, ~2.8 MB), so the default never asks more of the server than a single large image
    # does; 50-340 KB photos go ~10-40 at once. A 413 lowers it for the rest of the run.
    image_max_bytes: int = Field(
        default=3 * 1024 * 1024, ge=64 * 1024,
        description="Bytes of JSON per image request: images go several at once, up to this.",
    )


class WatchSettings(_Section):
    """How `connector watch` notices files and decides they are complete."""

    scan_interval: float = Field(
        default=30.0, gt=0, description="Seconds between scans of the inbox (the scan is the truth)."
    )
    min_age: float = Field(default=10.0, ge=0, description="Seconds since the file was first seen, by our clock.")
    stable_interval: float = Field(
        default=2.0, ge=0, description="Size and mtime must be unchanged across checks this far apart (seconds)."
    )
    observer: Literal["auto", "native", "polling", "none"] = Field(
        default="auto", description="File-system events: auto, native, polling, or none (scans only)."
    )
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_PATTERNS), description="File names taken (globs).")
    done_file: bool = Field(default=False, description="Take x.csv only when x.csv.done exists.")
    max_files_per_cycle: int = Field(default=50, ge=1, description="Files claimed per scan.")
    allow_empty: bool = Field(default=False, description="Process a file with no rows instead of refusing it.")
    allow_deletions: bool = Field(
        default=False, description="Let a complete file (vanished: delete) delete more than its max_vanished "
        "products, as push --allow-deletions does."
    )
    reprocess_duplicates: bool = Field(
        default=False, description="Process a file again when its content was seen before."
    )
    http_port: int | None = Field(
        default=None, ge=0, le=65535,
        description="Serve the status page and /healthz at this port (0: any free port; none: not served).",
    )
    http_host: str = Field(
        default="127.0.0.1",
        description="The address the status page listens on; any address but loopback needs http_token.",
    )
    http_token: str = Field(
        default="",
        repr=False,
        description="The status page's own token (or S2S_HTTP_TOKEN), never the API password; never shown.",
        json_schema_extra={"writeOnly": True},
    )
    health_port: int | None = Field(
        default=None, ge=0, le=65535, description="The old name of http_port (deprecated: a warning at start-up)."
    )
    health_file: Path | None = Field(
        default=None, description="Where health is written (default: <state>/health.json)."
    )

    @field_validator("http_token")
    @classmethod
    def _long_enough(cls, token: str) -> str:
        if token and len(token) < MIN_TOKEN_LENGTH:
            raise ValueError(f"is too short to guard a page: use at least {MIN_TOKEN_LENGTH} characters, "
                             "e.g. from: python -c \"import secrets; print(secrets.token_urlsafe(24))\"")
        return token

    @model_validator(mode="after")
    def _http(self) -> WatchSettings:
        if self.health_port is not None:
            if self.http_port is not None and self.http_port != self.health_port:
                raise ValueError("http_port and health_port (its old name) differ: keep only http_port")
            self.http_port = self.health_port
        if self.http_port is not None and not is_loopback(self.http_host) and not self.http_token:
            raise ValueError(f"http_host {self.http_host!r} is not a loopback address: the status page would be "
                             "open to the network; set http_token (or S2S_HTTP_TOKEN) to require it, or keep "
                             "http_host 127.0.0.1")
        return self


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: reachable only from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


class NotifySettings(_Section):
    """Alerts to a chat or monitoring webhook when a file fails or the API is unreachable."""

    webhook_url: str = Field(
        default="",
        repr=False,
        description="Where alerts are posted (or S2S_NOTIFY_WEBHOOK_URL); a secret: never logged or shown.",
        json_schema_extra={"writeOnly": True},
    )
    format: Literal["auto", "slack", "teams", "json"] = Field(
        default="auto",
        description='slack and teams post {"text": ...}; json posts {"event", "text", ...}; auto: by the URL.',
    )
    after_minutes: float = Field(
        default=15.0, gt=0,
        description="The API unreachable this long is alerted; at most one message per cause this often.",
    )
    timeout: float = Field(default=10.0, gt=0, le=60, description="Seconds one delivery may take.")

    @field_validator("webhook_url")
    @classmethod
    def _http(cls, url: str) -> str:
        # A secret: the reason names what is wrong without a character of the value, except a
        # scheme written as one (`ftp://`), which says nothing of the address or its key.
        if not url:
            return url
        scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]{0,15})://", url)
        if scheme is None or scheme[1].lower() not in ("http", "https"):
            given = f"it starts with {scheme[0]}" if scheme else "it has no scheme in front"
            raise ValueError(f"must be the webhook's address, starting with https:// (or http://); {given}")
        if not urlsplit(url).hostname:
            raise ValueError(f"must be the webhook's address: there is no host name after {scheme[0]}")
        return url


class RetentionSettings(_Section):
    """How long `watch` keeps what is done."""

    days: int = Field(
        default=90, ge=1,
        description="Archived and failed files (and their reports) older than this are removed by watch, and the "
        "ledger drops the bodies of work acknowledged longer ago (the catalogue keeps the last items).",
    )


class LimitSettings(_Section):
    """What one file may cost this machine."""

    # A row costs ~4 KB read, mapped and checked (bench/bench_pipeline.py: 415 MiB for 100k rows),
    # so the default keeps one file within ~2 GB.
    max_rows: int = Field(
        default=500_000, ge=1,
        description="Rows of one file held in memory at once; a bigger file is refused, naming this setting.",
    )


VerifyField = Literal["price", "qty", "sku", "title"]


class VerifySettings(_Section):
    """`connector verify`: checking that what the API acknowledged is in Stock2Shop."""

    after_minutes: float = Field(
        default=10.0, ge=0,
        description="`watch` verifies the products of each file it pushed this many minutes later (the queue is "
                    "asynchronous: give it time to process them).",
    )
    page_size: int = Field(
        default=100, ge=1, le=1000,
        description="Products asked for per search request (POST /v1/products/elastic_search).",
    )
    channel_id: int | None = Field(
        default=None, ge=1,
        description="The channel verify searches through (the channel_id query parameter of "
                    "POST /v1/products/elastic_search; or S2S_VERIFY_CHANNEL_ID): a user that is not an admin "
                    "finds nothing without one. Default: the account's channel when it has exactly one, else none "
                    "(`connector sources` lists the channels and says which one verify uses).",
    )
    repair: bool = Field(
        default=False,
        description="`watch` also sends again, at once, what its verify finds missing or differing "
                    "(as `connector verify --repair`).",
    )
    fields: list[VerifyField] = Field(
        default_factory=lambda: list(typing.get_args(VerifyField)),
        description="The fields compared with what was last sent; leave out one your Stock2Shop source flags "
                    "\"system\" (edited in the console, not taken from the ERP), or it differs forever.",
    )


class Rule(_Section):
    """Files whose name matches `pattern` (a case-insensitive glob) use `mapping`."""

    pattern: str = Field(description="A file name glob, e.g. pastel_*.csv (case-insensitive).")
    mapping: str = Field(description="A mapping name (mappings/NAME.yaml) or a path.")
    warehouse: str | None = Field(
        default=None,
        description='The warehouse a mapping\'s "{warehouse}" entry names, e.g. "{stem}" (the file name '
        "without its extension) for one stock file per warehouse (default: the file name's stem).",
    )
    tier: str | None = Field(
        default=None, description='The price tier a mapping\'s "{tier}" entry names, e.g. "{stem}" (default: the '
        "file name's stem).",
    )


class Settings(_Section):
    """connector.yaml: the settings of the connector. Environment variables win over the file."""

    api: ApiSettings = Field(default_factory=ApiSettings)
    folders: Folders = Field(default_factory=Folders)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    watch: WatchSettings = Field(default_factory=WatchSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    rules: list[Rule] = Field(
        default_factory=list, description="The first rule matching a file's name picks its mapping."
    )
    default_mapping: str = Field(default="stock2shop", description="The mapping of a file no rule matches.")
    legacy_encoding: str | Annotated[list[str], Field(min_length=1)] = Field(
        default_factory=lambda: list(DEFAULT_LEGACY),
        description="The code page of CSV files that are not UTF-8 or UTF-16, or the candidates the reader "
        "chooses among, in order of preference (a mapping's source.encoding names one for its files).",
    )
    allow_image_urls: bool = Field(
        default=False,
        description="Image URLs are not fetched (yet); true reports them as not fetched rather than as bad file names.",
    )
    config_path: SkipJsonSchema[Path | None] = Field(
        default=None, exclude=True
    )  # where the settings came from, not a setting
    _inbox_configured: bool = PrivateAttr(default=False)  # folders.inbox named in the file or the environment

    @property
    def inbox_configured(self) -> bool:
        """Whether the inbox is one a person named (in connector.yaml or the environment), rather
        than the default `inbox/` beside the settings: only the default is ever created."""
        return self._inbox_configured

    @field_validator("legacy_encoding")
    @classmethod
    def _encoding(cls, value: str | list[str]) -> str | list[str]:
        for name in [value] if isinstance(value, str) else value:
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError(f"{name!r} is not a known encoding (e.g. cp1252, mac_roman, cp1250)") from None
        return value

    def names_for(self, file_name: str) -> dict[str, str]:
        """The "{warehouse}" and "{tier}" a file's first matching rule gives ("{stem}" expanded).

        Refused rows fixed and dropped back (`bostonWarehouseInventory.csv.rejected.xlsx`) take
        the names of the file they came from, as they take its mapping (`mapping_for`).
        """
        rule, original = self._rule_for(file_name)
        stem = Path(original).stem
        out = {"warehouse": stem, "tier": stem}
        for key in ("warehouse", "tier"):
            template = getattr(rule, key, None)
            if template:
                out[key] = template.replace("{stem}", stem).replace("{name}", original)
        return out

    def mapping_for(self, file_name: str) -> str:
        """The mapping named by the first rule matching `file_name`, else the default.

        Refused rows fixed and dropped back (`stock.csv.rejected.xlsx`) take the mapping of
        the file they came from (`stock.csv`) when no rule names them.
        """
        rule, _ = self._rule_for(file_name)
        return rule.mapping if rule is not None else self.default_mapping

    def _rule_for(self, file_name: str) -> tuple[Rule | None, str]:
        """The first rule matching `file_name`, else the first matching the file refused rows came from
        (`x.csv` for `x.csv.rejected.xlsx`); and that original file's name."""
        names = [file_name]
        if file_name.lower().endswith(REJECTED_WORKBOOK):
            names.append(file_name[: -len(REJECTED_WORKBOOK)])
        for name in names:
            for rule in self.rules:
                if fnmatch.fnmatch(name.lower(), rule.pattern.lower()):
                    return rule, names[-1]
        return None, names[-1]


REJECTED_WORKBOOK = ".rejected.xlsx"  # the refused rows of a file, as report.write_rejected_xlsx names them

# Environment variable: its place in the settings.
_ENV = {
    "S2S_API_URL": ("api", "url"),
    "S2S_USERNAME": ("api", "username"),
    "S2S_PASSWORD": ("api", "password"),
    "S2S_SOURCE_ID": ("api", "source_id"),
    "S2S_STATE_DIR": ("folders", "state"),
    "S2S_HTTP_TOKEN": ("watch", "http_token"),
    "S2S_NOTIFY_WEBHOOK_URL": ("notify", "webhook_url"),
    "S2S_VERIFY_CHANNEL_ID": ("verify", "channel_id"),
}


def _keys(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The settings a block takes, in the definition's order (config_path is not one)."""
    return {name: info for name, info in model.model_fields.items() if not info.exclude}


def _secret(info: FieldInfo | None) -> bool:
    extra = info.json_schema_extra if info is not None else None
    return isinstance(extra, dict) and extra.get("writeOnly") is True


# --------------------------------------------------------------------------- loading


def load_settings(path: Path | None, env: Mapping[str, str]) -> Settings:
    """Read `path` (None: ./connector.yaml if it exists) and apply `env` on top.

    Raises ConfigError listing every problem found, each with its place in the file.
    """
    explicit = path is not None
    path = path or Path("connector.yaml")
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{path}: not valid YAML: not UTF-8 text (byte {exc.start})"]) from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {_yaml_problem(exc, text, env)}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of sections"])
        raw = loaded
    elif explicit:
        raise ConfigError([f"{path}: no such config file"])
    base = path.resolve().parent if path.exists() else Path.cwd()

    problems: list[str] = []
    doc, from_env = _with_env(raw, env)
    settings = None
    try:
        settings = Settings.model_validate(doc)
    except ValidationError as exc:
        problems.extend(_problem(err, doc, from_env) for err in exc.errors())
    if settings is None:
        settings = Settings()
    settings.config_path = path.resolve() if path.exists() else None

    folders = settings.folders
    settings._inbox_configured = "inbox" in folders.model_fields_set
    for name in _keys(Folders):
        value = getattr(folders, name)
        if value is not None:
            value = Path(value).expanduser()
            setattr(folders, name, value if value.is_absolute() else base / value)
    if settings.watch.health_file is None:
        settings.watch.health_file = folders.state / "health.json"
    problems.extend(_check_rules(doc.get("rules"), settings))
    if settings.watch.http_token and settings.watch.http_token == settings.api.password:
        problems.append(OWN_TOKEN)
    if problems:
        raise ConfigError(problems)
    return settings


def _with_env(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The document with the environment's values on top, and which places came from which variable.

    A blank value (`key:` with nothing after it) keeps the setting's default, as an absent key does.
    """
    doc: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and key in ("api", "folders", "batch", "watch", "notify"):
            model = _keys(Settings)[key].annotation
            assert isinstance(model, type) and issubclass(model, BaseModel)
            known = _keys(model)
            value = {k: v for k, v in value.items() if v is not None or _optional(known.get(k))}
        if value is not None or key not in _keys(Settings):
            doc[key] = value
    from_env: dict[tuple[str, str], str] = {}
    for name, (section, key) in _ENV.items():
        if env.get(name) and isinstance(doc.get(section, {}), dict):
            doc[section] = {**doc.get(section, {}), key: env[name]}
            from_env[(section, key)] = name
    return doc, from_env


def _optional(info: FieldInfo | None) -> bool:
    return info is None or type(None) in typing.get_args(info.annotation)


# What a person is told for pydantic's error types; the value is quoted before it.
_MESSAGES = {
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be text",
    "list_type": "must be a list",
    "path_type": "must be a folder path",
    "model_type": "must be a mapping of settings",
    "dict_type": "must be a mapping of settings",
    "model_attributes_type": "must be a mapping of settings",
}


def _problem(err: Any, doc: dict[str, Any], from_env: dict[tuple[str, str], str]) -> str:
    """One pydantic error as `place: what is wrong`, with did-you-mean and the valid choices; secrets hidden."""
    loc = tuple(err["loc"])
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    if loc[:2] in from_env:
        where = f"{from_env[loc[:2]]} ({where})"
    model, info = _field_at(loc)
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        valid = tuple(_keys(model)) if model is not None else ()
        return f"{where}: unknown setting{did_you_mean(loc[-1], valid)} {valid_choices(valid)}"
    if kind == "missing":
        return f"{where}: is required"
    secret = _secret(info)
    shown = f"the value {HIDDEN}" if secret else repr(value)
    if kind == "literal_error":
        choices = typing.get_args(info.annotation) if info is not None else ()
        return f"{where}: {shown} is not allowed{did_you_mean(value, choices)} {valid_choices(choices)}"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than") and info is not None:
        return f"{where}: {shown} must be {_bounds(info)}"
    if kind == "value_error":
        reason = str(err["ctx"]["error"])
        # the connector's own validators name what is wrong and what is valid, never a secret's value
        return f"{where}: {reason} (the value is a secret: not shown)" if secret else f"{where}: {reason}"
    given = f", not {_kind_of(value)}" if secret and kind.endswith("_type") else ""
    said = _MESSAGES.get(kind) or (_without(err["msg"], value) if secret else err["msg"])  # pydantic's own words
    return f"{where}: {shown} is not valid: {said}{given}"


def _without(quoted: str, value: Any) -> str:
    """Text a library wrote (which may quote its input) with the secret `value` replaced where it stands whole."""
    return _hide(quoted, [value] if isinstance(value, str) else [])


def _hide(quoted: str, secrets: Iterable[str]) -> str:
    """`quoted` with each secret replaced by HIDDEN, never inside a word: a short secret that is also a word
    ("secret", "line") must not garble the text around it, nor show where it stood by what it blanked out."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        before = r"(?<!\w)" if re.match(r"\w", secret[0]) else ""
        after = r"(?!\w)" if re.match(r"\w", secret[-1]) else ""
        quoted = re.sub(before + re.escape(secret) + after, lambda _: HIDDEN, quoted)
    return quoted


def _kind_of(value: Any) -> str:
    """What a wrongly typed value is, in a person's words (never the value itself)."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"


def _field_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, FieldInfo | None]:
    """The model holding the last key of `loc`, and that key's definition (None where there is none)."""
    model: type[BaseModel] | None = Settings
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        info = _keys(model).get(str(part))
        if info is None:
            return model, None
        inner = info.annotation
        args = [a for a in typing.get_args(inner) if isinstance(a, type) and issubclass(a, BaseModel)]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            model = inner
        elif args:
            model = args[0]
        elif part != loc[-1]:
            model = None
    return model, info


def _bounds(info: FieldInfo) -> str:
    low = high = None
    above = False
    for meta in info.metadata:
        if getattr(meta, "gt", None) is not None:
            low, above = meta.gt, True
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    if low is not None and high is not None:
        return f"between {low} and {high}"
    if above:
        return f"above {low}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _check_rules(rules: Any, settings: Settings) -> list[str]:
    """Each rule's mapping exists: the same lookup every file gets."""
    from connector.mapping import MappingError, find_mapping

    problems: list[str] = []
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        if isinstance(rule, dict) and isinstance(rule.get("mapping"), str):
            try:
                find_mapping(rule["mapping"], [settings.folders.mappings, builtin_mappings()])
            except MappingError as exc:
                problems.extend(f"rules[{i}].mapping: {p}" for p in exc.problems)
    return problems


def _yaml_problem(exc: yaml.YAMLError, text: str, env: Mapping[str, str]) -> str:
    """Where and what, without the quoted lines of the file that PyYAML's own message carries; PyYAML's
    words (which may quote a token of the file) with the configured secrets hidden."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = _redact(getattr(exc, "problem", None) or type(exc).__name__, text, env)
    context = getattr(exc, "context", None)
    return f"{where}{problem}" + (f" ({_redact(context, text, env)})" if context else "")


# `password: value` (or another secret's key) on a line of the file, for redacting a file that does not parse.
_SECRET_LINE = re.compile(r"^\s*[\"']?(?:password|http_token|webhook_url)[\"']?\s*:\s*(.+?)\s*$", re.MULTILINE)


def _redact(message: str, text: str, env: Mapping[str, str]) -> str:
    """The message with every configured secret replaced: S2S_PASSWORD and any `password:` value in the file."""
    # the value as written and without YAML's marks around it (quotes, an alias's *, brackets)
    written = [m.group(1) for m in _SECRET_LINE.finditer(text)]
    secrets = {*written, *(w.strip(" \t\"'*&!|>[]{},") for w in written)}
    secrets |= {env[name] for name, place in _ENV.items() if env.get(name) and _secret(_field_at(place)[1])}
    return _hide(message, secrets)


def builtin_mappings() -> Path:
    """The mappings shipped with the connector: connector/presets/ once installed, mappings/ in a checkout."""
    installed = Path(__file__).resolve().parent / "presets"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "mappings"


def require_credentials(settings: Settings) -> None:
    """Raise ConfigError unless the settings can talk to a real API."""
    missing = [
        name
        for name, value in (
            ("S2S_USERNAME (api.username)", settings.api.username),
            ("S2S_PASSWORD (api.password)", settings.api.password),
            ("S2S_SOURCE_ID (api.source_id)", settings.api.source_id),
        )
        if not value
    ]
    if missing:
        raise ConfigError([f"{m} is not set (or run with --sandbox to try the built-in sandbox API)" for m in missing])


# --------------------------------------------------------------------------- the published JSON Schema

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "config.schema.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of connector.yaml, generated from the definition."""
    return published_schema(Settings.model_json_schema(ref_template="#/$defs/{model}"),
                            schema_id="https://stock2shop-connector.local/schema/config.schema.json",
                            title="connector.yaml")


def main(argv: list[str] | None = None) -> int:
    """`--schema`: write the JSON Schema generated from the definition; `--check`: fail when the file differs."""
    from connector.common import schema_command

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    return schema_command(argv, prog="python -m connector.config", text=text, path=SCHEMA_PATH)


if __name__ == "__main__":
    sys.exit(main())
