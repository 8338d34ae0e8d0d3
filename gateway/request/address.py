"""Reading one IP address strictly, from a TCP peer or a forwarding-header node.

`ipaddress` rules (no octal, hex or integer forms); ports and IPv6 brackets removed, zone
ids dropped, IPv4-mapped IPv6 (`::ffff:192.0.2.1`) read as the IPv4 address. A node that
cannot be read yields an anomaly code, never an exception.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from gateway.request.cidr import IPAddress

__all__ = ["HOP_INVALID", "HOP_OBFUSCATED", "parse_address", "parse_node"]


#: Anomaly codes of `parse_node` (stable; recorded by `clientip.resolve_client`).
HOP_INVALID: Final = "forwarding_hop_invalid"
HOP_OBFUSCATED: Final = "forwarding_hop_obfuscated"
_PORT: Final = re.compile(r"[0-9]{1,5}|_[A-Za-z0-9._-]{1,64}")
_MAX_NODE_LENGTH: Final = 100


def parse_address(text: str) -> IPAddress | None:
    """A strict IP address from a peer string or a forwarding-header node, or None.

    Accepts `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`, `[2001:db8::1]:443`, `"[::1]"`,
    `fe80::1%eth0`; IPv4-mapped IPv6 becomes IPv4.
    """
    return parse_node(text)[0]


def parse_node(text: str) -> tuple[IPAddress | None, str | None]:
    """(address, None) or (None, anomaly code)."""
    node = text.strip()
    if len(node) >= 2 and node[0] == '"' and node[-1] == '"':
        node = node[1:-1].strip()
    if not node or len(node) > _MAX_NODE_LENGTH:
        return None, HOP_INVALID
    if node.lower() == "unknown" or node.startswith("_"):
        return None, HOP_OBFUSCATED
    if node.startswith("["):
        close = node.find("]")
        if close < 0:
            return None, HOP_INVALID
        host, rest = node[1:close], node[close + 1 :]
        if rest and not (rest[0] == ":" and _PORT.fullmatch(rest[1:])):
            return None, HOP_INVALID
    elif node.count(":") == 1:
        host, port = node.split(":")
        if not _PORT.fullmatch(port):
            return None, HOP_INVALID
    else:
        host = node
    host = host.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None, HOP_INVALID
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped, None
    return address, None
