"""Where a webhook may be sent: http(s) URLs whose host resolves to public addresses only.

`check(url)` parses the URL and resolves its host (socket.getaddrinfo); it raises
`UrlRefused` (400 `webhook_url_refused`, the reason in words) for

- a scheme other than http or https, no host, credentials in the URL, a bad port;
- a host that does not resolve;
- any resolved address that is loopback, link-local, private, multicast, unspecified, reserved
  or otherwise not globally routable (shared address space, documentation ranges...), unless
  it is inside WEBHOOK_ALLOW_PRIVATE_NETWORKS (a list of networks, or True for any).

It returns a `Target` holding the addresses it checked. Delivery connects to one of those, not
to the name again (webhooks.delivery): a name whose DNS answer changes between the check and the
connection (DNS rebinding) cannot send a request to a refused address. The check runs when a
subscription is saved and again at every attempt.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from webhooks.errors import UrlRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written (lower case), for the Host header and the TLS server name
    port: int
    path: str  # path and query, what the request line carries
    addresses: tuple[str, ...]  # the checked addresses, in getaddrinfo's order

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _allowed_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | bool:
    allowed = settings.WEBHOOK_ALLOW_PRIVATE_NETWORKS
    if isinstance(allowed, bool):
        return allowed
    return [ipaddress.ip_network(network, strict=False) for network in allowed]


def refusal(address: IPAddress) -> str | None:
    """What kind of address ``address`` is, if it may not be sent to ("a private address");
    None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    allowed = _allowed_networks()
    if allowed is True or (allowed and any(address in network for network in allowed)):
        return None
    for kind, test in (
        ("a loopback address", address.is_loopback),
        ("a link-local address", address.is_link_local),
        ("the unspecified address", address.is_unspecified),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
        ("not a globally routable address", not address.is_global),
    ):
        if test:
            return kind
    return None


def check(url: str) -> Target:
    """The URL's target, its addresses resolved and checked; `UrlRefused` saying why not."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"'{url}' is not a valid URL ({exc}).") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused(f"Only http and https URLs can receive webhooks, not '{scheme or url}'.")
    host = (parts.hostname or "").lower()
    if not host:
        raise UrlRefused(f"'{url}' has no host.")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("Credentials in the URL are not sent; authenticate with the signature instead.")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UrlRefused(f"The host '{host}' does not resolve ({exc}).") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # an IPv6 zone (fe80::1%eth0) is not part of the address
        address = ipaddress.ip_address(text)
        kind = refusal(address)
        if kind is not None:
            where = f"{text} is {kind}" if text == host else f"'{host}' resolves to {text}, {kind}"
            raise UrlRefused(
                f"{where}: webhooks are only sent to public addresses (WEBHOOK_ALLOW_PRIVATE_NETWORKS allows others)."
            )
        if text not in addresses:
            addresses.append(text)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(scheme=scheme, host=host, port=port, path=path, addresses=tuple(addresses))
