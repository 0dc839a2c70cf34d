"""The station's notification hook: who hears of a run's trouble away from its terminal.

    notify:
      command: "mail-operator --urgent"   # gets the event's JSON on stdin
      url: "https://chat.example/hooks/lab"  # gets it as an HTTP POST
      timeout_s: 10                      # each call, at most (default 10)

Either or both. The command line is split as a shell splits words (no pipes or
redirections: write `sh -c '...'` for those) and run without a shell. The URL is http or
https only. Checked when the station loads, each fault in one sentence naming file, line
and field; nothing is called then. `lipon_hw.engine.notify` calls them.
"""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

#: the URL schemes a webhook may use (urllib would also open file:// and ftp://)
URL_SCHEMES = ("http", "https")


class NotifySpec(BaseModel):
    """A command and/or a webhook called on every alarm of severity warning and above, on
    an abort and at the end of each run, with a JSON document of the event."""

    model_config = ConfigDict(extra="forbid")
    command: str | None = Field(default=None, max_length=4000)
    url: str | None = Field(default=None, max_length=2000)
    #: a hook that takes longer is given up (the command killed) and logged as failed
    timeout_s: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.command) if self.command else []


def check_notify(doc, spec: NotifySpec | None) -> None:
    """InputError naming file, line and field for a hook that could never be called."""
    if spec is None:
        return
    if spec.command is None and spec.url is None:
        raise doc.error(("notify",), "names no hook: give a command, a url, or both")
    if spec.command is not None:
        try:
            words = shlex.split(spec.command)
        except ValueError as exc:
            raise doc.error(("notify", "command"), f"cannot be split into words ({exc})") \
                from None
        if not words:
            raise doc.error(("notify", "command"), "is empty")
    if spec.url is not None:
        problem = url_problem(spec.url)
        if problem:
            raise doc.error(("notify", "url"), problem)


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook (None: it can)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"{url[:80]!r} is not a URL ({exc})"
    if parts.scheme.lower() not in URL_SCHEMES:
        return (f"{url[:80]!r} is not an http:// or https:// URL (a webhook is an HTTP "
                "POST)")
    if not parts.hostname:
        return f"{url[:80]!r} names no host"
    if any(c.isspace() for c in url):
        return f"{url[:80]!r} holds a space"
    return None
