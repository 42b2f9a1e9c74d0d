"""Settings from `connector.yaml` plus environment variables, validated once, all errors at once.

    settings = load_settings(Path("connector.yaml"), os.environ)

Relative folders are resolved against the config file's folder, or against the current
directory when there is no config file. Environment variables win over the file:
S2S_API_URL, S2S_USERNAME, S2S_PASSWORD, S2S_SOURCE_ID, S2S_STATE_DIR.
The password is kept out of every repr and message.
"""

from __future__ import annotations

import codecs
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from connector.errors import ConfigError

DEFAULT_API_URL = "https://app.stock2shop.com"
DEFAULT_PATTERNS = ["*.csv", "*.xlsx", "*.xls", "*.ods"]


@dataclass
class ApiSettings:
    url: str = DEFAULT_API_URL
    username: str = ""
    password: str = field(default="", repr=False)
    source_id: int | None = None
    rate: float = 1.0  # requests/s to start with; raised or lowered by x-S2S-RateLimit
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    request_deadline: float = 120.0  # seconds one request (send, wait, read the answer) may take in all
    retry_budget: float = 300.0  # seconds one request may keep retrying before its work waits in the ledger
    retry_after_cap: float = 120.0  # longest Retry-After we honour


@dataclass
class Folders:
    inbox: Path = Path("inbox")
    processing: Path = Path("processing")
    archive: Path = Path("archive")
    failed: Path = Path("failed")
    state: Path = Path("state")
    images: Path | None = None  # None: an `images/` folder beside the file being processed
    mappings: Path = Path("mappings")


@dataclass
class BatchSettings:
    max_items: int = 500  # Stock2Shop's own agent sends 500 per request
    # 2 MiB: below the ~2.7 MB body the image endpoint must already take (a 2 MB image in
    # base64), so a product batch is never the largest body the server sees from us.
    max_bytes: int = 2 * 1024 * 1024
    # Images go several per request up to this much JSON. 3 MiB: just above the largest body the
    # image endpoint must already take (one 2 MB image in base64, ~2.8 MB), so the default never
    # asks more of the server than a single large image does; 50-350 KB photos go ~10-40 at once.
    # A 413 lowers it for the rest of the run.
    image_max_bytes: int = 3 * 1024 * 1024


@dataclass
class WatchSettings:
    scan_interval: float = 30.0
    min_age: float = 10.0  # seconds since we first saw the file, by our clock
    stable_interval: float = 2.0  # size and mtime must be unchanged across checks this far apart
    observer: str = "auto"  # auto | native | polling | none
    patterns: list[str] = field(default_factory=lambda: list(DEFAULT_PATTERNS))
    done_file: bool = False  # take `x.csv` only when `x.csv.done` exists
    max_files_per_cycle: int = 50
    allow_empty: bool = False
    reprocess_duplicates: bool = False
    health_port: int | None = None  # /healthz on 127.0.0.1
    health_file: Path | None = None  # default: <state>/health.json


@dataclass
class LimitSettings:
    # Rows of one file held in memory at once; a bigger file is refused, naming this setting.
    # A row costs ~4 KB read, mapped and checked (bench/bench_pipeline.py: 415 MiB for 100k
    # rows), so the default keeps one file within ~2 GB.
    max_rows: int = 500_000


@dataclass
class Rule:
    """Files whose name matches `pattern` (a case-insensitive glob) use `mapping`."""

    pattern: str
    mapping: str


@dataclass
class Settings:
    api: ApiSettings = field(default_factory=ApiSettings)
    folders: Folders = field(default_factory=Folders)
    batch: BatchSettings = field(default_factory=BatchSettings)
    watch: WatchSettings = field(default_factory=WatchSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    rules: list[Rule] = field(default_factory=list)
    default_mapping: str = "stock2shop"
    legacy_encoding: str = "cp1252"
    allow_image_urls: bool = False
    config_path: Path | None = None

    def mapping_for(self, file_name: str) -> str:
        """The mapping named by the first rule matching `file_name`, else the default."""
        for rule in self.rules:
            if fnmatch.fnmatch(file_name.lower(), rule.pattern.lower()):
                return rule.mapping
        return self.default_mapping


_SECTIONS = {"api": ApiSettings, "folders": Folders, "batch": BatchSettings, "watch": WatchSettings,
             "limits": LimitSettings}
_TOP_LEVEL = {"default_mapping", "legacy_encoding", "allow_image_urls", "rules"}
_ENV = {
    "S2S_API_URL": ("api", "url"),
    "S2S_USERNAME": ("api", "username"),
    "S2S_PASSWORD": ("api", "password"),
    "S2S_SOURCE_ID": ("api", "source_id"),
    "S2S_STATE_DIR": ("folders", "state"),
}


def load_settings(path: Path | None, env: Mapping[str, str]) -> Settings:
    """Read `path` (None: ./connector.yaml if it exists) and apply `env` on top.

    Raises ConfigError listing every problem found, each with its place in the file.
    """
    explicit = path is not None
    path = path or Path("connector.yaml")
    raw: dict[str, Any] = {}
    problems: list[str] = []
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{path}: not valid YAML: {_short(exc)}"]) from None
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path}: the top level must be a mapping of sections"])
        raw = loaded
    elif explicit:
        raise ConfigError([f"{path}: no such config file"])
    base = path.resolve().parent if path.exists() else Path.cwd()

    settings = Settings(config_path=path.resolve() if path.exists() else None)
    for key, value in raw.items():
        if key in _SECTIONS:
            _apply_section(getattr(settings, key), key, value, problems)
        elif key == "rules":
            settings.rules = _rules(value, problems)
        elif key in _TOP_LEVEL:
            _set(settings, key, value, key, problems)
        else:
            problems.append(f"{key}: unknown setting (known: {', '.join(sorted([*_SECTIONS, *_TOP_LEVEL]))})")

    for name, (section, attr) in _ENV.items():
        if env.get(name):
            _set(getattr(settings, section), attr, env[name], name, problems)

    folders = settings.folders
    for f in fields(Folders):
        value = getattr(folders, f.name)
        if value is not None:
            value = Path(value).expanduser()
            setattr(folders, f.name, value if value.is_absolute() else base / value)
    if settings.watch.health_file is None:
        settings.watch.health_file = folders.state / "health.json"
    _check_ranges(settings, problems)
    if problems:
        raise ConfigError(problems)
    return settings


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


def _apply_section(target: Any, section: str, value: Any, problems: list[str]) -> None:
    if not isinstance(value, dict):
        problems.append(f"{section}: must be a mapping of settings")
        return
    known = {f.name for f in fields(target)}
    for key, item in value.items():
        if key not in known:
            problems.append(f"{section}.{key}: unknown setting (known: {', '.join(sorted(known))})")
        else:
            _set(target, key, item, f"{section}.{key}", problems)


def _set(target: Any, attr: str, value: Any, where: str, problems: list[str]) -> None:
    """Coerce `value` to the type of `target.attr` and set it, or record why not."""
    current = getattr(target, attr)
    kind = {f.name: f.type for f in fields(target)}[attr]
    try:
        if value is None:
            coerced = None if "None" in str(kind) else current
        elif "Path" in str(kind):
            coerced = Path(str(value))
        elif "bool" in str(kind):
            coerced = _bool(value)
        elif "float" in str(kind):
            coerced = float(value)
        elif "int" in str(kind):
            coerced = int(str(value).strip())
        elif "list" in str(kind):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("must be a list of text")
            coerced = list(value)
        else:
            coerced = str(value)
    except (TypeError, ValueError) as exc:
        shown = "(hidden)" if attr == "password" else repr(value)
        problems.append(f"{where}: {shown} is not valid: {exc}")
        return
    setattr(target, attr, coerced)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "yes", "1", "on"}:
        return True
    if text in {"false", "no", "0", "off"}:
        return False
    raise ValueError("must be true or false")


def _rules(value: Any, problems: list[str]) -> list[Rule]:
    rules: list[Rule] = []
    if not isinstance(value, list):
        problems.append("rules: must be a list of {pattern: GLOB, mapping: NAME}")
        return rules
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"pattern", "mapping"}:
            problems.append(f"rules[{i}]: must have exactly `pattern` and `mapping`")
            continue
        rules.append(Rule(str(item["pattern"]), str(item["mapping"])))
    return rules


def _check_ranges(s: Settings, problems: list[str]) -> None:
    if not 1 <= s.batch.max_items <= 500:
        problems.append("batch.max_items: must be between 1 and 500")
    if s.batch.max_bytes < 64 * 1024:
        problems.append("batch.max_bytes: must be at least 65536")
    if s.batch.image_max_bytes < 64 * 1024:
        problems.append("batch.image_max_bytes: must be at least 65536")
    if s.limits.max_rows < 1:
        problems.append("limits.max_rows: must be 1 or more")
    if s.api.rate <= 0:
        problems.append("api.rate: must be above 0")
    if s.watch.observer not in {"auto", "native", "polling", "none"}:
        problems.append("watch.observer: must be one of auto, native, polling, none")
    if s.watch.scan_interval <= 0 or s.watch.min_age < 0 or s.watch.stable_interval < 0:
        problems.append("watch: scan_interval must be above 0, min_age and stable_interval at least 0")
    if not s.api.url.startswith(("http://", "https://")):
        problems.append(f"api.url: {s.api.url!r} must start with http:// or https://")
    try:
        codecs.lookup(s.legacy_encoding)
    except LookupError:
        problems.append(f"legacy_encoding: {s.legacy_encoding!r} is not a known encoding (e.g. cp1252, cp1250, latin-1)")
    from connector.mapping import MappingError, find_mapping  # the same lookup every file gets

    for i, rule in enumerate(s.rules):
        try:
            find_mapping(rule.mapping, [s.folders.mappings, builtin_mappings()])
        except MappingError as exc:
            problems.extend(f"rules[{i}].mapping: {p}" for p in exc.problems)


def _short(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
