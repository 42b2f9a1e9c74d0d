"""The channel `connector verify` searches through, and why.

POST /v1/products/elastic_search takes a `channel_id` query parameter ("channel id assigned to
customer"), and "depending on which user role is assigned, the query param channel_id would need
to be specified to return results" (api-docs): a user that is not an admin finds nothing without
one. So verify searches through

    verify.channel_id (S2S_VERIFY_CHANNEL_ID)   when it is set;
    the account's one channel                   when it is not and GET /v1/channels lists exactly one,
                                                and without a channel when that one sees none of a
                                                catalogue holding products and a search without one
                                                does (an admin whose products are not linked to it);
    no channel                                  otherwise (several channels, none, or not listable):
                                                a verify that then finds nothing says so, naming them.

    channel = choose(settings.verify.channel_id, channels)   # pure: channels as GET /v1/channels lists them
    channel = resolve(client, settings.verify.channel_id)    # lists the channels only when it must
    client.search_products(query, channel_id=channel.channel_id)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from connector.api import ApiClient
from connector.errors import AuthFailed, SetupError

log = logging.getLogger("connector.verify")

SETTING_NAME = "verify.channel_id"
SETTING = f"{SETTING_NAME} (S2S_VERIFY_CHANNEL_ID)"


@dataclass(frozen=True)
class SearchChannel:
    """The channel searched through (None: none) and how it was chosen.

    how  configured | only (the account's one channel) | without_only (none: the account's one
         channel saw none of the products and a search without one did) | several (none
         configured) | no_channels (the account lists none) | unlisted (this user may not list them)
    channels  the account's channels as GET /v1/channels listed them; None when not asked or refused
    """

    channel_id: int | None
    how: str
    channels: tuple[dict, ...] | None = None

    def describe(self) -> str:
        """How verify searches, in a phrase: 'through channel 5 "Web" (verify.channel_id)'."""
        if self.how == "configured":
            return f"through channel {self._named(self.channel_id)} ({SETTING_NAME})"
        if self.how == "only":
            return f"through channel {self._named(self.channel_id)}, the account's only channel"
        if self.how == "without_only":
            only = self.channels[0].get("id") if self.channels else None
            return f"without a channel (the account's only channel, {self._named(only)}, saw none of the products)"
        why = {"several": f"{len(self.channels or ())} channels and none set in {SETTING_NAME}",
               "no_channels": "the account lists no channels",
               "unlisted": "this user may not list the channels"}[self.how]
        return f"without a channel ({why})"

    def listing(self) -> str:
        """The account's channels as 'id "name"', or why they are not known."""
        if self.channels is None:
            return "(the channels could not be listed)"
        return ", ".join(f"{c.get('id')} {_name(c)}" for c in self.channels) or "(none)"

    def alternative(self) -> SearchChannel | None:
        """The other way to search when this one sees none of a catalogue holding products, or None.

        Only for the account's one channel, chosen by verify itself: without a channel (an admin
        whose products are not linked to that channel sees them only so), and from there back
        through it. A channel set in verify.channel_id is never second-guessed."""
        if self.how == "only":
            return SearchChannel(None, "without_only", self.channels)
        if self.how == "without_only" and self.channels:
            only = choose(None, list(self.channels))
            return only if only.how == "only" else None
        return None

    def to_json(self) -> dict:
        return {"channel_id": self.channel_id, "how": self.how}

    def _named(self, channel_id: int | None) -> str:
        found = next((c for c in self.channels or () if str(c.get("id")) == str(channel_id)), None)
        return f"{channel_id}" + (f" {_name(found)}" if found else "")


def choose(configured: int | None, channels: list[dict] | None) -> SearchChannel:
    """The channel to search through, from the setting and the account's channels (None: not listable).

        choose(None, [{"id": 5}])              -> SearchChannel(5, "only", ...)
        choose(None, [{"id": 5}, {"id": 6}])   -> SearchChannel(None, "several", ...)
        choose(7, None)                        -> SearchChannel(7, "configured")
    """
    listed = None if channels is None else tuple(channels)
    if configured is not None:
        return SearchChannel(configured, "configured", listed)
    if listed is None:
        return SearchChannel(None, "unlisted")
    if len(listed) == 1:
        try:
            return SearchChannel(int(listed[0]["id"]), "only", listed)
        except (KeyError, TypeError, ValueError):
            return SearchChannel(None, "unlisted")
    return SearchChannel(None, "several" if listed else "no_channels", listed)


def list_channels(client: ApiClient) -> list[dict] | None:
    """The account's channels, or None when this user may not list them (said in the log)."""
    try:
        return client.list_channels()
    except (AuthFailed, SetupError) as exc:  # a role may search products and not list channels
        log.warning("the channels could not be listed: %s", exc)
        return None


def resolve(client: ApiClient, configured: int | None) -> SearchChannel:
    """The channel verify searches through: the setting, else one listed through `client` (its
    limiter); says in the log which one it took when it took the account's only channel."""
    if configured is not None:
        return choose(configured, None)
    channel = choose(None, list_channels(client))
    if channel.how == "only":
        log.info("verify searches %s (set %s to choose another)", channel.describe(), SETTING)
    return channel


def _name(channel: dict) -> str:
    return f"\"{channel.get('description') or '(no description)'}\""
