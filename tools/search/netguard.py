"""Which addresses ``web_visit`` may connect to (SSRF protection), and resolving names to them.

The model chooses the URLs, so a fetch must never reach the machine itself, the private network
it runs in, or a cloud metadata service. ``NetworkPolicy.resolve(url)`` parses the URL, checks
its scheme and host name, resolves the name once, and refuses the URL unless *every* address
the name resolves to is public; the caller then connects to the returned address itself (no
second lookup: a name cannot resolve to a public address for the check and to a private one for
the connection, i.e. DNS rebinding). Every redirect hop goes through the same check.

Refused: loopback, private (RFC 1918, unique-local), link-local (169.254/16 with the metadata
address 169.254.169.254, fe80::/10), multicast, unspecified, reserved, carrier-grade NAT
(100.64/10, incl. Alibaba's metadata 100.100.100.200), benchmarking and documentation ranges,
and IPv6 forms that embed one of those as IPv4 (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible,
NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo). In short: only globally routable addresses,
per ``ipaddress``'s ``is_global``. Names of metadata services are refused by name as well.

``allow_hosts`` names hosts (names or IP literals, compared case-insensitively) that skip the
address check; tests use it for their loopback server. It is an explicit, per-tool setting. An
entry with a port (``wiki.intranet.example:8080``, ``127.0.0.1:8000``, ``[::1]:8000``) allows
that port only; an entry without one allows every port of the host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tools.search.results import BlockedURLError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

SCHEMES = {"http": 80, "https": 443}
#: Host names of cloud metadata services, refused whatever they resolve to.
METADATA_NAMES = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "metadata.azure"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, TCP)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise BlockedURLError(f"The host name {host!r} could not be resolved ({error}).") from error
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def blocked_reason(address: IPAddress) -> str | None:
    """What ``address`` is when it must not be connected to (a noun phrase), else None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"an IPv6 form of {embedded}, {reason}" if reason else None
        if address in _NAT64_LOCAL:
            return "a local-use NAT64 address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        if str(address) == "169.254.169.254":
            return "the cloud metadata address"
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_private:
        return "a private-network address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global:
        return "not a publicly routable address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = int(address)
    if packed >> 32 == 0 and packed > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed)
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to tell the server (``host``)."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str  # path and query, as sent in the request line

    @property
    def host_header(self) -> str:
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == SCHEMES[self.scheme] else f"{name}:{self.port}"


class NetworkPolicy:
    """The SSRF check (see the module docstring); picklable, no state beyond its settings."""

    def __init__(self, allow_hosts: Iterable[str] = (), resolver: Resolver | None = None) -> None:
        self.allow_hosts = frozenset(allow_entry(entry) for entry in allow_hosts)
        self._resolver = resolver

    def allows(self, host: str, port: int) -> bool:
        """Whether ``host:port`` skips the address check (``allow_hosts``)."""
        return (host, None) in self.allow_hosts or (host, port) in self.allow_hosts

    def resolve(self, url: str) -> Target:
        """The URL checked and resolved; ``BlockedURLError`` (for the model) when refused."""
        scheme, host, port, path = split_url(url)
        allowed = self.allows(host, port)
        if not allowed and (host in METADATA_NAMES or host.endswith(".internal")):
            raise BlockedURLError(f"Refused to visit {url}: {host} is a cloud metadata host.")
        literal = _ip_literal(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            addresses = (self._resolver or system_resolver)(host, port)
            if not addresses:
                raise BlockedURLError(f"The host name {host!r} did not resolve to any address.")
        if not allowed:
            for text in addresses:
                reason = blocked_reason(ipaddress.ip_address(text.split("%", 1)[0]))
                if reason is not None:
                    what = (
                        f"{host} is {reason}"
                        if literal is not None
                        else f"{host} resolves to {text}, which is {reason}"
                    )
                    raise BlockedURLError(
                        f"Refused to visit {url}: {what}. Only public web addresses can be visited."
                    )
        return Target(url, scheme, host, port, addresses[0], path)


def allow_entry(entry: str) -> tuple[str, int | None]:
    """``(host, port or None)`` of an ``allow_hosts`` entry: ``host``, ``host:port``,
    ``[v6]``, ``[v6]:port`` or a bare IPv6 literal. ValueError when it is none of those."""
    text = entry.strip().casefold()
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError("allow_hosts entries are host, host:port or [ipv6]:port")
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError("allow_hosts entries are host, host:port or [ipv6]:port")
    return host, int(port) if port else None


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path?query)`` of an http(s) URL; ``BlockedURLError`` otherwise."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as error:
        raise BlockedURLError(f"{url!r} is not a valid URL ({error}).") from error
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise BlockedURLError(f"Refused to visit {url!r}: only http and https URLs can be visited.")
    if parts.username is not None or parts.password is not None:
        raise BlockedURLError(f"Refused to visit {url!r}: URLs with credentials are not visited.")
    host = (parts.hostname or "").rstrip(".").casefold()
    if not host:
        raise BlockedURLError(f"{url!r} has no host name.")
    try:
        host = host.encode("idna").decode("ascii") if not _ip_literal(host) else host
    except UnicodeError as error:
        raise BlockedURLError(f"{url!r} has an invalid host name ({error}).") from error
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, host, port or SCHEMES[scheme], path


def _ip_literal(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal (any form ``inet_aton`` takes, too)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    # Forms like "2130706433", "0x7f.1" or "127.1" are IPv4 addresses to the C library.
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
