"""`connector sources`: the first step of pushing for real, over HTTP against the sandbox.

Each way a setup goes wrong (the URL, the credentials, the source id) ends with exit 2 and one
line saying what to fix; the password never shows.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.cli import EXIT_CODES
from connector.sandbox import Faults
from tests.support import CliResult as Result
from tests.support import run_cli

PASSWORD = "sentinel-pass-5b2c"


@pytest.fixture
def run(monkeypatch, capsys, tmp_path) -> Callable[..., Result]:
    """`run(args, env)`: `connector ARGS` in-process in tmp_path, with only `env`'s S2S_* variables."""

    def run(args: list[str], env: dict | None = None) -> Result:
        result = run_cli(monkeypatch, capsys, args, tmp_path, env)
        assert PASSWORD not in result.stdout + result.stderr
        return result

    return run


@pytest.fixture
def account(make_sandbox) -> Callable[..., dict]:
    """The environment for a sandbox user demo / PASSWORD (source 1), with overrides."""
    sb = make_sandbox(rate=3.0, unauth_rate=1000.0, users={"demo": PASSWORD})  # two requests a run: never 429

    def env(**overrides: str) -> dict:
        return {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": PASSWORD, "S2S_SOURCE_ID": "1",
                **overrides}

    return env


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sources_lists_sources_and_channels_and_names_the_configured_source(run, account):
    result = run(["sources"], account())
    assert result.returncode == EXIT_CODES["done"] == 0, result.stderr
    out = result.stdout
    assert "Sources (1):" in out and "1  Sandbox source  (type apifact_push, active)   <- api.source_id" in out
    assert "Channels (1):" in out and "Sandbox channel" in out
    assert "Rate limit: 3 requests/s, announced by the API" in out  # the sandbox's x-S2S-RateLimit for its 3/s
    assert 'api.source_id 1: "Sandbox source", type apifact_push, active, a master source' in out


def test_sources_works_with_the_built_in_sandbox(run):
    result = run(["sources", "--sandbox"])
    assert result.returncode == 0 and "<- api.source_id" in result.stdout


def test_wrong_credentials_exit_2_saying_which_settings(run, account):
    result = run(["sources"], account(S2S_PASSWORD="not-the-password"))
    assert result.returncode == EXIT_CODES["setup"] == 2
    assert "login refused" in result.stderr and "S2S_USERNAME and S2S_PASSWORD" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr
    assert "Sources" not in result.stdout
    assert "journaled" not in result.stderr  # sources journals nothing: no word of work kept


def test_a_url_nobody_answers_at_exits_2_naming_the_setting(run, account):
    url = f"http://127.0.0.1:{free_port()}"
    result = run(["sources"], account(S2S_API_URL=url))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no answer from the Stock2Shop API at {url}" in result.stderr
    assert "connection refused" in result.stderr and "S2S_API_URL" in result.stderr


def test_a_url_that_is_not_the_api_exits_2(run, account):
    env = account()
    result = run(["sources"], {**env, "S2S_API_URL": env["S2S_API_URL"] + "/not-the-api"})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "404" in result.stderr and "api.url" in result.stderr


def test_a_source_id_that_is_not_the_users_exits_2_after_listing_the_sources(run, account):
    result = run(["sources"], account(S2S_SOURCE_ID="7"))
    assert result.returncode == 2
    assert "1  Sandbox source" in result.stdout and "<- api.source_id" not in result.stdout
    assert "api.source_id (S2S_SOURCE_ID) 7 is not one of this user's sources (1)" in result.stderr


def test_without_a_source_id_the_sources_are_listed_and_the_setting_named(run, account):
    env = account()
    del env["S2S_SOURCE_ID"]
    result = run(["sources"], env)
    assert result.returncode == 2 and "Sources (1):" in result.stdout
    assert "api.source_id (S2S_SOURCE_ID) is not set; set it to one of this user's sources: 1" in result.stderr


def test_without_credentials_sources_says_what_to_set(run, tmp_path: Path):
    result = run(["sources"])
    assert result.returncode == 2 and "S2S_USERNAME" in result.stderr and "--sandbox" in result.stderr


@pytest.mark.parametrize("command, options", [("sources", []), ("verify", ["--repair", "--report-dir"])])
def test_sources_and_verify_explain_themselves_and_the_readme_names_them(command, options):
    from connector.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    assert len(sub.format_help()) > 400
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"| `connector {command}" in readme
    assert all(option in readme and option in sub.format_help() for option in options)
    steps = readme.split("To push for real:", 1)[1]
    assert steps.index("connector sources") < steps.index("connector push")


def test_a_user_who_may_not_list_channels_still_sees_the_sources(run, make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, users={"demo": PASSWORD},
                      faults=Faults(error_rate=1.0, error_statuses=(403,), paths=("/v1/channels",)))
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": PASSWORD, "S2S_SOURCE_ID": "1"}
    result = run(["sources"], env)
    assert result.returncode == 0, result.stderr
    assert "<- api.source_id" in result.stdout and "Channels: this user may not list them" in result.stdout
    assert "the channels could not be listed" in result.stderr


def test_render_says_what_the_source_is_and_which_rate_applies():
    from connector.sources import Account, render

    linked = {"id": 9, "description": "Branch", "type": "apifact_sapone", "active": 0, "source_id": 318}
    account = Account(url="https://api.example", username="u", sources=[linked], channels=[], source_id=9,
                      announced_rate=None, configured_rate=1.0)
    text = render(account)
    assert 'api.source_id 9: "Branch", type apifact_sapone, inactive, a linked source (of source 318)' in text
    assert "warning: this source is not active" in text
    assert "Rate limit: none announced by the API; the connector keeps to api.rate, 1 requests/s" in text
    assert account.problem is None
    assert str(Account(**{**account.__dict__, "source_id": 10}).problem).startswith("api.source_id (S2S_SOURCE_ID) 10")


@pytest.mark.parametrize("config, channel, expected", [
    # the account's only channel is the one verify searches through
    ({}, None, ['1  Sandbox channel  (type website, active)   <- verify searches through it',
                'verify searches through channel 1 "Sandbox channel", the account\'s only channel; when it sees '
                'none of your products, verify searches once without a channel']),
    # several channels and none set: verify searches without one, and the line says what to set
    ({"channels": 2}, None, ["Channels (2):", "2  Sandbox channel 2  (type website, active)\n",
                             "verify searches without a channel (2 channels and none set in verify.channel_id); "
                             "a user that is not an admin finds products only through a channel: set "
                             "verify.channel_id (S2S_VERIFY_CHANNEL_ID)"]),
    ({"channels": 2}, "2", ['2  Sandbox channel 2  (type website, active)   <- verify searches through it',
                            'verify searches through channel 2 "Sandbox channel 2" (verify.channel_id)']),
])
def test_sources_says_which_channel_verify_searches_through(run, make_sandbox, config, channel, expected):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, users={"demo": PASSWORD}, search_needs_channel=True, **config)
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": PASSWORD, "S2S_SOURCE_ID": "1"}
    result = run(["sources"], {**env, **({"S2S_VERIFY_CHANNEL_ID": channel} if channel else {})})
    assert result.returncode == 0, result.stderr
    assert all(line in result.stdout for line in expected), result.stdout
    assert result.stdout.count("<- verify searches through it") == (0 if "channels" in config and not channel else 1)


def test_a_verify_channel_that_is_not_the_users_exits_2_naming_the_channels(run, make_sandbox):
    sb = make_sandbox(rate=1000.0, unauth_rate=1000.0, users={"demo": PASSWORD}, channels=2)
    env = {"S2S_API_URL": sb.url, "S2S_USERNAME": "demo", "S2S_PASSWORD": PASSWORD, "S2S_SOURCE_ID": "1",
           "S2S_VERIFY_CHANNEL_ID": "9"}
    result = run(["sources"], env)
    assert result.returncode == EXIT_CODES["setup"] == 2, result.stdout + result.stderr
    assert ('verify.channel_id (S2S_VERIFY_CHANNEL_ID) 9 is not one of this user\'s channels '
            '(1 "Sandbox channel", 2 "Sandbox channel 2")') in result.stderr
    assert "<- verify searches through it" not in result.stdout
