"""Channels to a server: plaintext or TLS (optionally with a client certificate), gRPC's retries and load
balancing in its service config, and the bearer-token metadata."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import grpc

_LOGGER = logging.getLogger(__name__)

#: PEM bytes, or the path of a PEM file.
Pem = bytes | str | os.PathLike


#: Calls that change nothing on the server beyond their answer, so gRPC may send them again when no server
#: answered (UNAVAILABLE: a restart, a replica going away). Forward makes a session and Backward uses one up:
#: sent twice, they would leave a session behind or fail, so they are not retried blindly.
RETRIED_METHODS = {
    "gradserve.v1.GradServe": ("Run", "RunStream", "ListLayers", "RegisterGraph", "CheckGradients"),
    "grpc.health.v1.Health": ("Check",),
}
#: gRPC's own retryPolicy: up to 4 more attempts, 0.25 s, 0.5 s, 1 s and 2 s apart (gRPC jitters each by 20%),
#: about 4 s in all: a server restarting on its port has time to come back, and a target where nothing ever
#: answers is still reported within seconds. A call's deadline bounds it all.
RETRY_POLICY = {"maxAttempts": 5, "initialBackoff": "0.25s", "maxBackoff": "2s", "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"]}


def service_config(*, round_robin: bool = False, retries: bool = True) -> str:
    """The channel's service config (JSON): RETRY_POLICY for RETRIED_METHODS, and round_robin balancing.

    ``round_robin`` spreads calls over every address the target resolves to ("ipv4:10.0.0.1:50051,10.0.0.2:50051",
    or a DNS name with several records such as a Kubernetes headless Service); gRPC's default, pick_first, uses one.
    """
    config: dict = {}
    if retries:
        names = [{"service": service, "method": method} for service, methods in RETRIED_METHODS.items()
                 for method in methods]
        config["methodConfig"] = [{"name": names, "retryPolicy": RETRY_POLICY}]
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def open_channel(target: str, *, tls: bool = False, root_certificates: Pem | None = None,
                 certificate_chain: Pem | None = None, private_key: Pem | None = None,
                 server_name: str | None = None, round_robin: bool = False, retries: bool = True,
                 options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """A channel to ``target``: TLS when ``tls`` or any certificate is given, else plaintext.

    ``root_certificates`` verify the server (default: the system's roots); ``certificate_chain`` and
    ``private_key`` are this client's certificate for mutual TLS; ``server_name`` is the name the server's
    certificate must carry when it differs from the target's host (a probe dialing 127.0.0.1).
    ``retries`` and ``round_robin``: see service_config.
    """
    options = [*options, ("grpc.service_config", service_config(round_robin=round_robin, retries=retries)),
               ("grpc.enable_retries", int(retries))]
    if not (tls or root_certificates or certificate_chain or private_key):
        return grpc.insecure_channel(target, options=options)
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("a client certificate needs both certificate_chain and private_key")
    credentials = grpc.ssl_channel_credentials(_pem(root_certificates), _pem(private_key), _pem(certificate_chain))
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(target, credentials, options=options)


def token_metadata(token: str | None, target: str, secure: bool) -> tuple[tuple[str, str], ...]:
    """The ``authorization: Bearer`` metadata every call carries (empty without a token).

    A token also goes over plaintext, for loopback tests and for hops a service mesh encrypts; to any
    other host it is logged as a warning, since anyone on the path could read it.
    """
    if not token:
        return ()
    if not secure and not is_loopback(target):
        _LOGGER.warning("sending a bearer token to %s without TLS: anyone on the network path can read it; "
                        "pass root_certificates= (or tls=True) unless the path is encrypted", target)
    return (("authorization", f"Bearer {token.strip()}"),)


def is_loopback(target: str) -> bool:
    """Whether ``target`` ("host:port", "[v6]:port", "unix:...") stays on this machine."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    host = target.rsplit(":", 1)[0] if not target.startswith("[") else target[1:].split("]", 1)[0]
    host = host.removeprefix("dns:///").removeprefix("ipv4:").removeprefix("ipv6:")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()
