"""Who may call: TLS and mutual-TLS server credentials, and bearer tokens checked by an interceptor."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Iterable

import grpc


#: Services a caller reaches without a token: orchestrators' health probes carry none.
OPEN_SERVICES = frozenset({"grpc.health.v1.Health"})


class SecurityConfigError(ValueError):
    """The TLS or token settings do not fit together; the message names the flags to fix."""


def server_credentials(cert: bytes | None, key: bytes | None,
                       client_ca: bytes | None = None) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM bytes (None: plaintext); with ``client_ca``, clients must show a certificate
    it signed (mutual TLS)."""
    if not check_tls(cert, key, client_ca):
        return None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def check_tls(cert: bytes | None, key: bytes | None, client_ca: bytes | None = None) -> bool:
    """Whether these settings ask for TLS; raise SecurityConfigError when they do not fit together.

    Makes no gRPC object, so `--workers` can check its flags before it forks.
    """
    if cert is None and key is None:
        if client_ca is not None:
            raise SecurityConfigError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key as well")
        return False
    if cert is None or key is None:
        raise SecurityConfigError("TLS needs both --tls-cert and --tls-key (PEM files)")
    for flag, pem, marker in (("--tls-cert", cert, b"-----BEGIN CERTIFICATE-----"),
                              ("--tls-key", key, b"PRIVATE KEY-----"),
                              ("--tls-client-ca", client_ca or b"-----BEGIN CERTIFICATE-----",
                               b"-----BEGIN CERTIFICATE-----")):
        if marker not in pem:
            raise SecurityConfigError(f"{flag} is not PEM: expected a block containing {marker.decode()!r}")
    return True


def read_tokens(token: str | None = None, token_file: str | Path | None = None) -> tuple[str, ...]:
    """The accepted bearer tokens: ``token``, plus each line of ``token_file`` (several allow rotation)."""
    tokens = [token.strip()] if token and token.strip() else []
    if token_file:
        try:
            lines = Path(token_file).read_text().splitlines()
        except OSError as exc:
            raise SecurityConfigError(f"--token-file {token_file}: {exc.strerror}") from None
        tokens += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not tokens:
            raise SecurityConfigError(f"--token-file {token_file} holds no token (one per line)")
    return tuple(tokens)


class TokenAuth(grpc.ServerInterceptor):
    """Refuse calls without ``authorization: Bearer <token>`` naming an accepted token (UNAUTHENTICATED).

    Health is open to everyone (OPEN_SERVICES); reflection is not: it is part of the API surface, and
    grpcurl sends its ``-H`` headers with reflection calls too.
    """

    def __init__(self, tokens: Iterable[str]):
        self._tokens = tuple(t.encode() for t in tokens)
        if not self._tokens:
            raise SecurityConfigError("TokenAuth needs at least one token")

    def intercept_service(self, continuation, handler_call_details):
        service = handler_call_details.method.lstrip("/").rpartition("/")[0]
        if service in OPEN_SERVICES:
            return continuation(handler_call_details)
        problem = self._problem(handler_call_details.invocation_metadata or ())
        if problem is None:
            return continuation(handler_call_details)
        return _refusal(problem, continuation(handler_call_details))

    def _problem(self, metadata) -> str | None:
        """Why the call's credentials are refused, or None when they are good."""
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return ("missing bearer token: send the metadata 'authorization: Bearer <token>' "
                    "(gs.connect(target, token=...), grpcurl -H 'authorization: Bearer ...')")
        scheme, _, presented = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return "the authorization metadata must read 'Bearer <token>'"
        presented_bytes = presented.strip().encode()
        # Compare with every token, without stopping early, so timing tells nothing about which matched.
        matches = [hmac.compare_digest(presented_bytes, token) for token in self._tokens]
        return None if any(matches) else "invalid bearer token"


def _refusal(message: str, handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler:
    """A handler that ends the call with UNAUTHENTICATED without reading its request.

    Always a request-streaming one, whatever the method's kind: gRPC reads a unary call's message before its
    handler runs, so a unary refusal would first buffer up to max-message-bytes (256 MiB) of anonymous
    bytes, and wait for them on a pool thread. A streaming handler gets the call on its headers alone: the
    message is never asked for, gRPC keeps no more of it than the stream's flow-control window, and the
    thread is free at once.
    """

    def refuse(requests, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.stream_stream_rpc_method_handler(refuse)
