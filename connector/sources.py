"""`connector sources`: log in, list the user's sources and channels, check `api.source_id`
and say which channel `connector verify` searches through (connector/channels.py).

The first step of pushing for real (api-docs, "Push products": authenticate, then
GET /v1/sources and take the id of the source the products come from):

    account = look_up(client, settings.api.source_id)
    print(render(account))
    account.problem   # None, or why api.source_id cannot be used (unset, unknown)

A wrong URL, wrong credentials, an unknown source id and a verify.channel_id that is not one of
the listed channels are each a FatalError with one line
saying what to change; the CLI turns them into exit 2.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connector.api import ApiClient
from connector.channels import SETTING as CHANNEL_SETTING
from connector.channels import SearchChannel, choose
from connector.errors import ApiUnavailable, AuthFailed, SetupError

log = logging.getLogger("connector.sources")


@dataclass
class Account:
    """What the API says about the logged-in user, and what that means for `api.source_id`."""

    url: str
    username: str
    sources: list[dict]
    channels: list[dict] | None  # None: this user may not list them
    source_id: int | None
    announced_rate: str | None  # x-S2S-RateLimit as the API sent it; None when it sent none
    configured_rate: float
    verify_channel_id: int | None = None  # verify.channel_id as configured

    @property
    def search_channel(self) -> SearchChannel:
        """The channel `connector verify` searches through, with these channels."""
        return choose(self.verify_channel_id, self.channels)

    @property
    def source(self) -> dict | None:
        """The listed source whose id is `source_id`, or None."""
        return next((s for s in self.sources if str(s.get("id")) == str(self.source_id)), None)

    @property
    def problem(self) -> str | None:
        """Why `api.source_id` cannot be used to push, or None when it can."""
        ids = ", ".join(str(s.get("id")) for s in self.sources) or "none"
        if self.source_id is None:
            return f"api.source_id (S2S_SOURCE_ID) is not set; set it to one of this user's sources: {ids}"
        if self.source is None:
            return (f"api.source_id (S2S_SOURCE_ID) {self.source_id} is not one of this user's sources "
                    f"({ids}); set it to the id of the source your products come from")
        if self.verify_channel_id is not None and self.channels is not None and \
                not any(str(c.get("id")) == str(self.verify_channel_id) for c in self.channels):
            return (f"{CHANNEL_SETTING} {self.verify_channel_id} is not one of this user's channels "
                    f"({self.search_channel.listing()}): verify would find nothing through it; set it to one of "
                    "them, or leave it unset")
        return None


def look_up(client: ApiClient, source_id: int | None, verify_channel_id: int | None = None) -> Account:
    """Log in and list sources and channels through `client` (its limiter and retries).

    Raises AuthFailed for refused credentials and SetupError when the API cannot be reached at
    its URL or answers as something else: for a command whose whole point is to check the
    setup, an unreachable address is a setup problem, not work to wait for.
    """
    settings = client.settings
    channels: list[dict] | None = None
    try:
        client.authenticate()
        sources = client.list_sources()
        try:
            channels = client.list_channels()
        except (AuthFailed, SetupError) as exc:  # a role may list sources and not channels: say so, go on
            log.warning("the channels could not be listed: %s", exc)
    except ApiUnavailable as exc:
        raise SetupError(f"no answer from the Stock2Shop API at {client.base}: {exc}; check api.url "
                         "(S2S_API_URL) and the network", exc.status) from None
    return Account(url=client.base, username=settings.username, sources=sources, channels=channels,
                   source_id=source_id, announced_rate=client.announced_rate, configured_rate=settings.rate,
                   verify_channel_id=verify_channel_id)


def render(account: Account) -> str:
    """The account as a person reads it: the API, the rate limit, sources, channels, the verdict."""
    lines = [f"API: {account.url} (logged in as {account.username})"]
    if account.announced_rate:
        lines.append(f"Rate limit: {account.announced_rate} requests/s, announced by the API (x-S2S-RateLimit); "
                     "the connector keeps to it")
    else:
        lines.append(f"Rate limit: none announced by the API; the connector keeps to api.rate, "
                     f"{account.configured_rate:g} requests/s")
    lines.append(f"Sources ({len(account.sources)}):")
    lines += [f"  {_entry(s)}" + ("   <- api.source_id" if s is account.source else "") for s in account.sources]
    if account.channels is None:
        lines.append("Channels: this user may not list them (see the warning above)")
    else:
        search = account.search_channel
        lines.append(f"Channels ({len(account.channels)}):")
        lines += [f"  {_entry(c)}" + ("   <- verify searches through it" if str(c.get("id")) == str(search.channel_id)
                                      else "") for c in account.channels]
    source = account.source
    if source is not None:
        lines.append(f"api.source_id {account.source_id}: {_what(source)}")
        if not _active(source):
            lines.append("  warning: this source is not active in Stock2Shop; products pushed to it may not be "
                         "processed")
    lines.append(_verify_line(account.search_channel))
    return "\n".join(lines)


def _verify_line(search: SearchChannel) -> str:
    """Which channel `connector verify` searches through, and what to set when it is none."""
    line = f"verify searches {search.describe()}"
    if search.how == "several":
        line += (f"; a user that is not an admin finds products only through a channel: set {CHANNEL_SETTING} "
                 "to the one that holds your products")
    elif search.how == "only":
        line += ("; when it sees none of your products, verify searches once without a channel (an admin whose "
                 f"products are not linked to it sees them only so; {CHANNEL_SETTING} set is never second-guessed)")
    elif search.how == "unlisted":
        line += f"; if verify finds nothing, set {CHANNEL_SETTING} to the channel that holds your products"
    return line


def _entry(entry: dict) -> str:
    return f"{entry.get('id')}  {entry.get('description') or '(no description)'}  ({_kind(entry)})"


def _kind(entry: dict) -> str:
    return f"type {entry.get('type') or '?'}, {'active' if _active(entry) else 'inactive'}"


def _what(source: dict) -> str:
    # api-docs: "If source_id is not null, then this is a linked source."
    linked = source.get("source_id")
    role = f"a linked source (of source {linked})" if linked not in (None, "", 0) else "a master source"
    return f"\"{source.get('description') or ''}\", {_kind(source)}, {role}"


def _active(entry: dict) -> bool:
    return str(entry.get("active", 1)).lower() not in ("0", "false", "")
