"""The guard in front of ``qdebug explore``'s web server (a WSGI middleware, standard library
only).

A local web server is reachable by every web page the user opens: a page can send requests to
``http://localhost:PORT`` (blind, but with side effects), and a page whose domain re-resolves to
127.0.0.1 (DNS rebinding) can read the answers. The guard answers only requests that

- are addressed to this server: their ``Host`` header names a loopback address
  (``localhost``, ``127.0.0.1``, ``[::1]``) or the ``--host`` given, with the port listened on
  (a rebinding page's requests carry its own domain name);
- carry the random token of the URL ``qdebug explore`` prints: as ``?token=`` (the first page)
  or as the cookie set on that answer (``SameSite=Strict``: never sent by another site's page).

What the server then serves (the trace's model and node data only) is its own business:
``qdebug.output.explore_server``.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs

#: ``Host`` names that always mean this machine.
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: Addresses meaning "every interface".
WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})
#: The URL parameter carrying the token.
TOKEN_PARAM = "token"

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

#: Sent with every answer: the token never leaves in a ``Referer`` (the page loads Google's
#: fonts), no answer is framed by another site, cached or sniffed as another type.
SAFE_HEADERS = (
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
)


def new_token() -> str:
    """A fresh random token (192 bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name.strip("[]").split("%")[0])
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) reaches this machine only."""
    if host.strip().lower() == "localhost":
        return True
    ip = _ip(host)
    if ip is not None:
        return ip.is_loopback
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    ips = [_ip(str(info[4][0])) for info in infos]
    return bool(ips) and all(ip is not None and ip.is_loopback for ip in ips)


def host_header_name(host: str) -> str:
    """``host`` as a ``Host`` header spells it: lower case, an IPv6 address in brackets."""
    name = host.strip().lower()
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def split_host(header: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header (port None when absent), or None if malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[: end + 1], header[end + 1:]
    else:
        name, sep, port_text = header.partition(":")
        rest = sep + port_text
    if not name:
        return None
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit() or not rest[1:].isascii():
        return None
    return name, int(rest[1:])


@dataclass(frozen=True)
class Guard:
    """Who may talk to the server: the token, and the host and port it listens on."""

    token: str
    port: int
    bound_host: str
    """``--host`` as given (``localhost``, ``127.0.0.1``, ``0.0.0.0``, …)."""

    @property
    def cookie(self) -> str:
        """The cookie's name (one per port: cookies do not tell ports apart)."""
        return f"qdebug-explore-{self.port}"

    def host_allowed(self, header: str) -> bool:
        """Whether a request's ``Host`` header names this server: a loopback name or the
        bound host, with its port; bound to every interface, also any IP address (a
        rebinding page's requests name its domain, never an address)."""
        parsed = split_host(header)
        if parsed is None:
            return False
        name, port = parsed
        if port != self.port and not (port is None and self.port == 80):
            return False
        bound = host_header_name(self.bound_host)
        if name in LOOPBACK_NAMES or name == bound:
            return True
        return bound in WILDCARDS and _ip(name) is not None

    def _matches(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"),
                                   self.token.encode("utf-8"))

    def query_token_ok(self, environ: dict[str, Any]) -> bool:
        """The request's URL carries the token."""
        values = parse_qs(str(environ.get("QUERY_STRING", ""))).get(TOKEN_PARAM, [])
        return any(self._matches(v) for v in values)

    def cookie_token_ok(self, environ: dict[str, Any]) -> bool:
        """The request carries the cookie set with the first page."""
        try:
            jar = SimpleCookie(str(environ.get("HTTP_COOKIE", "")))
        except CookieError:
            return False
        morsel = jar.get(self.cookie)
        return morsel is not None and self._matches(morsel.value)

    def set_cookie(self) -> tuple[str, str]:
        return ("Set-Cookie",
                f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict")


def _refuse(start_response: StartResponse, status: str, text: str) -> list[bytes]:
    body = (text + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *SAFE_HEADERS])
    return [body]


def guarded(app: WSGIApp, guard: Guard) -> WSGIApp:
    """``app`` behind ``guard``: a request for another host, or without the token, is
    answered 403 and never reaches ``app``."""

    def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not guard.host_allowed(str(environ.get("HTTP_HOST", ""))):
            return _refuse(start_response, "403 Forbidden",
                           f"qdebug explore answers only requests for localhost:{guard.port}")
        from_query = guard.query_token_ok(environ)
        if not (from_query or guard.cookie_token_ok(environ)):
            return _refuse(start_response, "403 Forbidden",
                           "qdebug explore: open the URL it printed (it carries a token)")

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            names = {k.lower() for k, _ in headers}
            extra = [h for h in SAFE_HEADERS if h[0].lower() not in names]
            if from_query:
                extra.append(guard.set_cookie())
            return start_response(status, [*headers, *extra], exc_info)

        return app(environ, start)

    return wsgi
