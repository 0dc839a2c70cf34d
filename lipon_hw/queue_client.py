"""`lipon-hw submit` and `lipon-hw queue`: the queue of a `lipon-hw serve`, over its REST API.

Plain HTTP from the standard library (no web stack needed to submit). The server is
`--server URL`, else the one announced in `<data>/serve.json` of `--data`, else
`DEFAULT_SERVER`. The token is `--token`, else `LIPON_HW_TOKEN`; none: the server's
local operator (a loopback server without tokens). A refusal (401, 403, 404, 409, 413,
422) is InputError (exit 2) with the server's sentence, which for a sequence that does
not validate is the sentence `lipon-hw validate` prints; a server that does not answer is
LiponError (exit 1).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from lipon_hw.errors import InputError, LiponError

DEFAULT_SERVER = "http://localhost:8765"
SERVE_FILE = "serve.json"
TOKEN_ENV = "LIPON_HW_TOKEN"
TIMEOUT_S = 30.0


def server_url(server: str | None, data_dir: str | Path) -> str:
    if server:
        return server.rstrip("/")
    try:
        announced = json.loads((Path(data_dir) / SERVE_FILE).read_text(encoding="utf-8"))
        if isinstance(announced, dict) and isinstance(announced.get("url"), str):
            return announced["url"].rstrip("/")
    except (OSError, ValueError):
        pass
    return DEFAULT_SERVER


def token_of(token: str | None) -> str | None:
    token = token or os.environ.get(TOKEN_ENV, "")
    return token.strip() or None


def call(method: str, url: str, token: str | None, body: dict | None = None) -> dict:
    """The server's JSON answer; InputError for a refusal, LiponError when none comes."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return json.loads(answer.read().decode("utf-8") or "{}")
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code in (401, 403):
            raise InputError(f"the server refused: {detail}") from None
        if 400 <= exc.code < 500:
            raise InputError(detail) from None
        raise LiponError(f"the server at {url} failed ({exc.code}: {detail})") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise LiponError(f"no lipon-hw server answers at {url.split('/api/')[0]} ({why}); "
                         "start one with `lipon-hw serve`, or pass --server URL") from None
    except ValueError:
        raise LiponError(f"the server at {url} answered with something that is not "
                         "JSON") from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read().decode("utf-8")).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    return detail if isinstance(detail, str) else f"HTTP {exc.code} {exc.reason}"


def submit(server: str, token: str | None, sequence: str, seed: int | None,
           speed: float | None) -> dict:
    """Submit the sequence file's text under its file name; the entry as queued."""
    from lipon_hw.yamlfile import read_text

    text = read_text(sequence)
    options = {k: v for k, v in (("seed", seed), ("speed", speed)) if v is not None}
    return call("POST", f"{server}/api/queue", token,
                {"name": Path(sequence).name, "text": text, "options": options})


def listing(server: str, token: str | None) -> dict:
    return call("GET", f"{server}/api/queue", token)


def move(server: str, token: str | None, entry_id: int, position: int) -> dict:
    return call("POST", f"{server}/api/queue/{entry_id}/move", token, {"position": position})


def cancel(server: str, token: str | None, entry_id: int) -> dict:
    return call("POST", f"{server}/api/queue/{entry_id}/cancel", token, {})


def entry_line(entry: dict) -> str:
    """One line of `lipon-hw queue`: id, state, lanes, the sequence, its run, who."""
    run = f"run {entry['run_id']}" if entry.get("run_id") is not None else "-"
    line = (f"{entry['id']:>4}  {entry['state']:<9} {','.join(entry['lanes']):<16} "
            f"{run:<8} {entry['sequence_name']} ({entry['name']}) by {entry['submitted_by']}")
    return f"{line}: {entry['message']}" if entry.get("message") else line


def submit_command(server: str | None, token: str | None, data_dir: str, sequence: str,
                   seed: int | None, speed: float | None, as_json: bool) -> list[str]:
    """`lipon-hw submit`'s output."""
    entry = submit(server_url(server, data_dir), token_of(token), sequence, seed, speed)
    return [json.dumps(entry) if as_json else
            f"queued as {entry['id']} on {', '.join(entry['lanes'])}"]


def queue_command(server: str | None, token: str | None, data_dir: str,
                  move_to: tuple[int, int] | None, cancel_id: int | None,
                  as_json: bool) -> list[str]:
    """`lipon-hw queue`'s output: the listing, or what a move or a cancel did."""
    url, token = server_url(server, data_dir), token_of(token)
    if move_to is None and cancel_id is None:
        found = listing(url, token)
        if as_json:
            return [json.dumps(found)]
        return [entry_line(e) for e in found["entries"]] or ["the queue is empty"]
    moved = move(url, token, *move_to) if move_to is not None else None
    said = cancel(url, token, cancel_id) if cancel_id is not None else None
    if as_json:
        return [json.dumps({"moved": moved, "cancelled": said})]
    return ([f"entry {moved['id']} moved to {move_to[1]} of lane {moved['lanes'][0]}"]
            if moved else []) + ([said["detail"]] if said else [])
