"""connector.yaml: settings defined once, every problem at once with its place, secrets never shown."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from connector.config import SCHEMA_PATH, ConfigError, Settings, json_schema, load_settings
from connector.config import main as config_main

SECRET = "hunter2-secret"


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    path = tmp_path / "connector.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env or {})
    return caught.value.problems


def test_defaults_folders_resolved_and_environment_wins(tmp_path):
    path = tmp_path / "connector.yaml"
    path.write_text("api:\n  username: 12345\n  source_id: 7\nfolders:\n  inbox: drop\nwatch:\n  done_file: yes\n")
    settings = load_settings(path, {"S2S_SOURCE_ID": "42", "S2S_STATE_DIR": "/var/s2s", "S2S_PASSWORD": SECRET})
    assert settings.api.username == "12345"  # digits in YAML are still a username
    assert settings.api.source_id == 42 and settings.api.password == SECRET
    assert settings.folders.inbox == tmp_path / "drop" and settings.folders.state == Path("/var/s2s")
    assert settings.watch.health_file == Path("/var/s2s/health.json") and settings.watch.done_file is True
    assert settings.config_path == path.resolve() and SECRET not in repr(settings)


def test_a_blank_setting_keeps_its_default(tmp_path):
    path = tmp_path / "connector.yaml"
    path.write_text("api:\n  url:\n  source_id:\n")
    settings = load_settings(path, {})
    assert settings.api.url == "https://app.stock2shop.com" and settings.api.source_id is None


def test_every_problem_is_reported_at_once_with_its_place(tmp_path):
    found = problems_of(
        tmp_path,
        "api:\n  pasword: x\n  rate: 0\n  url: ftp://x\nbatch:\n  max_items: 900\nwatch:\n  observer: inotify\n"
        "  scan_interval: soon\nfolder:\n  inbox: x\nrules:\n  - {patern: '*.csv', mapping: stock2shop}\n"
        "legacy_encoding: klingon\n",
    )
    text = "\n".join(found)
    assert 'api.pasword: unknown setting; did you mean "password"? (valid choices: url, username, password,' in text
    assert "api.rate: 0 must be above 0" in text
    assert "api.url: 'ftp://x' must start with http:// or https://" in text
    assert "batch.max_items: 900 must be between 1 and 500" in text
    assert "watch.observer: 'inotify' is not allowed (valid choices: auto, native, polling, none)" in text
    assert "watch.scan_interval: 'soon' is not valid: must be a number" in text
    assert 'folder: unknown setting; did you mean "folders"?' in text
    assert 'rules[0].patern: unknown setting; did you mean "pattern"? (valid choices: pattern, mapping, warehouse, tier)' in text
    assert "rules[0].mapping" not in text  # given, and it exists
    assert "legacy_encoding: 'klingon' is not a known encoding" in text
    assert len(found) == 10, found


def test_an_environment_variable_is_named_in_its_problem(tmp_path):
    found = problems_of(tmp_path, "api:\n  rate: 2\n", {"S2S_SOURCE_ID": "abc"})
    assert found == ["S2S_SOURCE_ID (api.source_id): 'abc' is not valid: must be a whole number"]


def test_a_rule_naming_no_mapping_lists_the_known_ones(tmp_path):
    found = problems_of(tmp_path, "rules:\n  - {pattern: '*.csv', mapping: pastle}\n")
    assert found[0].startswith("rules[0].mapping: pastle: no such mapping") and "stock2shop" in found[0]


@pytest.mark.parametrize(
    "text",
    [
        f"api:\n  password: {SECRET}\n  username: [\n",  # the line PyYAML quotes is next to the password
        f"api:\n  password: \"{SECRET}\n",  # an unclosed quote around the password itself
        f"api:\n  password: *{SECRET}\n",  # an alias, which PyYAML names in its message
        f"api:\n  password: [{SECRET}]\n",  # the wrong type: the value is not repeated
        f"api:\n  password: {SECRET}\n  \tsource_id: 1\n",
    ],
)
def test_the_password_never_appears_in_a_message(tmp_path, text):
    found = problems_of(tmp_path, text, {"S2S_PASSWORD": SECRET + "-env"} if "username" in text else {})
    assert found and SECRET not in "\n".join(found), found


@pytest.mark.parametrize(("text", "env", "reason"), [
    (f"notify:\n  webhook_url: ftp://hooks.example/{SECRET}\n", {},
     "notify.webhook_url: must be the webhook's address, starting with https:// (or http://); it starts with ftp://"),
    (f"notify:\n  webhook_url: hooks.slack.com/services/{SECRET}\n", {},
     "notify.webhook_url: must be the webhook's address, starting with https:// (or http://); "
     "it has no scheme in front"),
    ("", {"S2S_NOTIFY_WEBHOOK_URL": f"https:///{SECRET}"},
     "S2S_NOTIFY_WEBHOOK_URL (notify.webhook_url): must be the webhook's address: there is no host name after https://"),
    (f"api:\n  password: [{SECRET}]\n", {}, "api.password: the value (hidden) is not valid: must be text, not a list"),
    (f"api:\n  password: {{{SECRET}: 1}}\n", {}, "api.password: the value (hidden) is not valid: must be text, not a mapping"),
    (f"watch:\n  http_token: {SECRET[:9]}\n", {},
     "watch.http_token: is too short to guard a page: use at least 16 characters"),
])
def test_a_secret_setting_says_what_is_wrong_and_never_its_value(tmp_path, monkeypatch, capsys, text, env, reason):
    from tests.support import run_cli

    (tmp_path / "connector.yaml").write_text(text, encoding="utf-8")
    result = run_cli(monkeypatch, capsys, ["status"], tmp_path, env)
    assert result.returncode == 2 and reason in result.stderr, result.stderr
    assert "not shown" in result.stderr or "(hidden)" in result.stderr
    assert SECRET[:9] not in result.stdout + result.stderr


def test_the_committed_config_schema_is_the_one_the_definition_generates():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n", (
        "connector/schema/config.schema.json differs from the definition in connector/config.py: "
        "run `python -m connector.config --schema` and commit the result"
    )
    assert config_main(["--check"]) == 0


def test_the_schema_accepts_the_documented_settings_and_refuses_a_typo():
    validator = jsonschema.Draft202012Validator(json_schema())
    good = yaml.safe_load("api:\n  source_id: 42\n  rate: 1\nwatch:\n  observer: polling\nrules:\n  - {pattern: a*, mapping: b}\n")
    assert list(validator.iter_errors(good)) == []
    assert list(validator.iter_errors({"api": {"pasword": "x"}}))
    assert json_schema()["$defs"]["ApiSettings"]["properties"]["password"]["writeOnly"] is True


def test_the_readme_lists_every_setting_with_its_default():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Configuration", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    documented = yaml.safe_load(block)
    defaults = Settings()
    assert set(documented) == set(Settings.model_fields) - {"config_path"}
    for section in ("api", "folders", "batch", "watch", "limits", "notify"):
        model = getattr(defaults, section)
        assert set(documented[section]) == set(type(model).model_fields), section
        for key, value in documented[section].items():
            default = getattr(model, key)
            shown = str(default) if isinstance(default, Path) else default
            assert value == shown, f"README: {section}.{key} is {value!r}, the default is {shown!r}"


@pytest.mark.parametrize(("text", "env"), [("verify:\n  channel_id: 0\n", {}), ("", {"S2S_VERIFY_CHANNEL_ID": "-3"})])
def test_a_verify_channel_below_one_is_refused(tmp_path, text, env):
    found = problems_of(tmp_path, text, env)
    assert len(found) == 1 and "verify.channel_id" in found[0] and "must be at least 1" in found[0], found
