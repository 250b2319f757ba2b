"""Where the daemon is and who we are to it: the same conventions as the
`paddock` CLI (crates/paddock-cli/src/connect.rs).

- address: the argument, else ``$PADDOCK_ADDR``, else the daemon's unix socket
  ``unix:/var/lib/paddock/paddockd.sock``. ``unix:/path``, ``HOST:PORT`` or
  ``http://HOST:PORT``.
- token: the argument, else ``$PADDOCK_TOKEN``; sent on every call as
  ``authorization: Bearer <token>``. Root on the unix socket needs none; every
  call on TCP does (or a client certificate).
- TLS (``paddockd --tls-cert``): ``tls_ca`` (else ``$PADDOCK_TLS_CA``), the CA
  of the daemon's certificate, turns it on for a TCP address, as does an
  ``https://`` address; ``tls_cert``/``tls_key`` (``$PADDOCK_TLS_CERT``,
  ``$PADDOCK_TLS_KEY``) present a client certificate, which stands for the
  token its CN names (``paddockd --tls-client-ca``).
"""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

DEFAULT_ADDR = "unix:/var/lib/paddock/paddockd.sock"

# paddockd accepts messages up to 256 MiB (paddock_proto::MAX_MESSAGE): file
# contents and command output travel in single messages, and an image or PDF
# `read` result is up to ~27 MiB of base64.
MAX_MESSAGE = 256 << 20

# Uploads go in 1 MiB messages, the size the daemon's transfers are tuned for.
CHUNK = 1 << 20


def resolve(addr: Optional[str], token: Optional[str]) -> Tuple[str, str, Tuple[Tuple[str, str], ...]]:
    """(address as given, gRPC target, call metadata)."""
    addr = addr or os.environ.get("PADDOCK_ADDR") or DEFAULT_ADDR
    token = token if token is not None else os.environ.get("PADDOCK_TOKEN")
    if addr.startswith("unix:"):
        target = addr  # grpc's own syntax: unix:/abs/path or unix:///abs/path
    elif "://" in addr:
        scheme, rest = addr.split("://", 1)
        if scheme not in ("http", "https"):
            raise ValueError(
                f"daemon address {addr!r}: use unix:/path, HOST:PORT, http://HOST:PORT or https://HOST:PORT"
            )
        target = rest.rstrip("/")
    else:
        target = addr
    metadata: Tuple[Tuple[str, str], ...] = ()
    if token:
        token = token.strip()
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
            raise ValueError("the token holds characters that cannot go in a header")
        metadata = (("authorization", f"Bearer {token}"),)
    return addr, target, metadata


def tls_credentials(addr: str, ca: Optional[str], cert: Optional[str], key: Optional[str]):
    """grpc channel credentials for a TLS address, or None for plaintext."""
    import grpc

    ca = ca or os.environ.get("PADDOCK_TLS_CA")
    cert = cert or os.environ.get("PADDOCK_TLS_CERT")
    key = key or os.environ.get("PADDOCK_TLS_KEY")
    wanted = addr.startswith("https://") or (bool(ca) and not addr.startswith(("unix:", "http://")))
    if not wanted:
        return None
    if not ca:
        raise ValueError("TLS needs tls_ca (PADDOCK_TLS_CA): the CA that signed the daemon's certificate")
    if bool(cert) != bool(key):
        raise ValueError("tls_cert and tls_key go together")

    def read(path: Optional[str]) -> Optional[bytes]:
        if not path:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert))


def channel_options() -> List[Tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
    ]


def unreachable_hint(addr: str) -> str:
    return f"cannot reach paddockd at {addr} (is it running? pass addr= or set PADDOCK_ADDR)"
