"""Who may do what on `lipon-hw serve`: users and roles from tokens, and the loopback rule.

Roles, least first: `viewer` (reads runs, samples, alarms), `operator` (also pauses,
continues and aborts runs). A third, `engine`, is no person: the token `serve` writes to
`<data>/serve.json` for the engines of that data directory, good only for posting a run's
events (`require("engine")`); it reads nothing and acts on nothing.

Where the users come from (`configure`):
- `--token-file FILE`: one user a line, `NAME ROLE TOKEN` separated by blanks (`#` starts
  a comment, blank lines are skipped); a token is at least 16 characters (e.g.
  `python -c "import secrets; print(secrets.token_urlsafe())"`), names and tokens unique.
  A file that its group or others may read or write is refused: `chmod 600 FILE`.
- else the environment variable `LIPON_HW_TOKEN`: one operator, named `operator`.
- else no tokens: allowed on a loopback bind only (127.0.0.1, ::1, localhost), where a
  request from this machine without a token is the local operator, named after the OS
  user running the server — the single-user lab PC. Any other bind refuses to start.
  A tokenless request sent by a browser must come from this server's own pages (a Host
  that is a loopback address, an Origin equal to it, no cross-site fetch), so that
  another site open in the lab PC's browser cannot post here as the local operator
  (CSRF, DNS rebinding). A reverse proxy on the same machine makes every request look
  local: behind one, configure tokens.

With tokens, every request (reads too) carries `Authorization: Bearer TOKEN`: none, or one
not known, is 401 (`WWW-Authenticate: Bearer`); a role below the one asked is 403; both
with `{"detail": one sentence}`. Tokens are compared in constant time (each known token's
digest against the one sent, all of them every time).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import HTTPException
from starlette.requests import HTTPConnection

from lipon_hw.errors import InputError
from lipon_hw.store_requests import os_user

#: people's roles, least first: a role may do what those before it may
ROLES = ("viewer", "operator")
#: the engines' role: posting events only
ENGINE = "engine"
MIN_TOKEN_CHARS = 16
TOKEN_ENV = "LIPON_HW_TOKEN"
#: a WebSocket's token, which a browser cannot send as a header (RFC 6750 §2.3's name)
WS_TOKEN_PARAM = "access_token"


@dataclass(frozen=True)
class User:
    name: str
    role: str


class Security:
    """The server's users by token; `local_operator`: who a tokenless request from this
    machine is (only when no tokens are configured and the server binds loopback)."""

    def __init__(self, tokens: Mapping[str, User] | None = None,
                 local_operator: User | None = None):
        self._users = [(_digest(t), u) for t, u in (tokens or {}).items()]
        self.local_operator = local_operator

    def add(self, token: str, user: User) -> None:
        self._users.append((_digest(token), user))

    def identify(self, authorization: str | None, client_host: str | None,
                 headers: Mapping[str, str] | None = None) -> User:
        """The user of a request, from its Authorization header, where it comes from and
        (a tokenless local request) the page that sent it; 401 when it names no user."""
        if authorization is None:
            if self.local_operator is not None and is_loopback(client_host):
                foreign = _foreign_page(headers or {})
                if foreign:
                    raise _unauthorized(f"a request without a token must come from this "
                                        f"server's own pages, not {foreign}")
                return self.local_operator
            raise _unauthorized("this request needs a token: send `Authorization: Bearer "
                                "TOKEN`")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("the Authorization header must be `Bearer TOKEN`")
        sent = _digest(token)
        found = None
        for known, user in self._users:  # every one compared, whichever matches
            if hmac.compare_digest(known, sent) and found is None:
                found = user
        if found is None:
            raise _unauthorized("the token sent is not one this server knows")
        return found

    def authorize(self, authorization: str | None, client_host: str | None,
                  role: str, headers: Mapping[str, str] | None = None) -> User:
        """The request's user if its role allows `role`; else 401 or 403."""
        user = self.identify(authorization, client_host, headers)
        if not allows(user.role, role):
            if user.role == ENGINE:
                why = "the engine's token may only post a run's events"
            elif role == ENGINE:
                why = "only an engine of this data directory posts a run's events"
            else:
                why = f"{user.name} is {_a(user.role)}; this needs {_a(role)}"
            raise HTTPException(403, why)
        return user


def allows(has: str, needs: str) -> bool:
    if ENGINE in (has, needs):
        return has == needs
    return has in ROLES and ROLES.index(has) >= ROLES.index(needs)


def require(role: str):
    """A FastAPI dependency: the request's User when its role allows `role` (the app's
    `state.security` decides), else 401/403: `user: Annotated[User, Depends(require("engine"))]`
    in a route's parameters. A WebSocket without the header (a browser cannot give it
    one) may send its token as the query parameter `access_token`."""
    if role not in (*ROLES, ENGINE):
        raise ValueError(f"no role {role!r}")

    def dependency(connection: HTTPConnection) -> User:
        security: Security = connection.app.state.security
        client = connection.client.host if connection.client else None
        authorization = connection.headers.get("authorization")
        if authorization is None and connection.scope["type"] == "websocket":
            sent = connection.query_params.get(WS_TOKEN_PARAM)  # a browser's WebSocket
            authorization = f"Bearer {sent}" if sent is not None else None
        return security.authorize(authorization, client, role, connection.headers)

    return dependency


def configure(bind_host: str, token_file: str | Path | None = None,
              environ: Mapping[str, str] = os.environ) -> Security:
    """The users of a server about to bind `bind_host` (see the module's doc). InputError
    (one sentence) for a bad token file, or a bind beyond loopback without tokens."""
    if token_file is not None:
        tokens = load_token_file(Path(token_file))
    elif environ.get(TOKEN_ENV, "").strip():
        token = environ[TOKEN_ENV].strip()
        _check_token(token, TOKEN_ENV)
        tokens = {token: User("operator", "operator")}
    else:
        tokens = {}
    if tokens:
        return Security(tokens)
    if not is_loopback(bind_host):
        raise InputError(f"serving on {bind_host}, beyond this machine, needs tokens: pass "
                         f"--token-file FILE or set {TOKEN_ENV} (or bind 127.0.0.1)")
    return Security({}, local_operator=User(os_user(), "operator"))


def load_token_file(path: Path) -> dict[str, User]:
    """token → User, from a file its owner alone may read (see the module's doc)."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise InputError(f"the token file {path} is not a regular file")
        if mode & 0o077:
            raise InputError(f"the token file {path} may be read or written by others than "
                             f"its owner (mode {stat.S_IMODE(mode):03o}): `chmod 600 {path}`")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"the token file {path} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise InputError(f"the token file {path} is not UTF-8 text") from None
    tokens: dict[str, User] = {}
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.partition("#")[0].split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise InputError(f"{where}: a user is `NAME ROLE TOKEN`, not {len(fields)} field(s)")
        name, role, token = fields
        if role not in ROLES:
            raise InputError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        _check_token(token, where)
        if token in tokens:
            raise InputError(f"{where}: {name}'s token is also {tokens[token].name}'s")
        if name in names:
            raise InputError(f"{where}: user {name!r} is named twice")
        tokens[token] = User(name, role)
        names.add(name)
    if not tokens:
        raise InputError(f"the token file {path} names no users (`NAME ROLE TOKEN` a line)")
    return tokens


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _foreign_page(headers: Mapping[str, str]) -> str | None:
    """What betrays a tokenless request from this machine as another site's doing (a page
    in the lab PC's browser posting here, or a name rebound to 127.0.0.1): a Host that is
    not a loopback address, an Origin other than that Host, a cross-site fetch. None: it
    is this server's own page, or no browser's request at all (curl, a script)."""
    host = headers.get("host", "")
    if not is_loopback(_hostname(f"http://{host}")):
        return f"host {host!r}"
    origin = headers.get("origin")
    if origin is not None and (_hostname(origin) is None or urlsplit(origin).netloc != host):
        return f"origin {origin!r}"
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} page"
    return None


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        return None


def _check_token(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise InputError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} characters, "
                         f"not {len(token)}")


def _a(role: str) -> str:
    return f"an {role}" if role[0] in "aeiou" else f"a {role}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})
