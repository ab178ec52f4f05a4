"""`fedbeat serve`: the coordinator on gRPC over TLS, raw-bytes methods of ``coordinator.proto``.

Nothing a device sends can take the coordinator down. A call is authenticated from its
metadata token (one hash, one dict lookup) before its body is looked at; an unauthenticated
call costs the server no parsing. Each method has its own request size limit (checked before
parsing), concurrent calls are bounded (RESOURCE_EXHAUSTED beyond), undecodable messages are
INVALID_ARGUMENT, anything unexpected is logged and answered INTERNAL; the round state only
changes inside ``Coordinator``.
"""
from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc

from edge_runtime.identity import token_from_metadata
from edge_runtime.protocol import METHODS, SERVICE, ProtocolError
from simulation.coordinator.config import CoordinatorConfig
from simulation.coordinator.rounds import Coordinator, Unauthenticated
from simulation.coordinator.status_page import StatusServer, coordinator_status

log = logging.getLogger("fedbeat.coordinator")
_SMALL_REQUEST_BYTES = 1024  # CheckIn and Download carry a model version and a flag
_UPLOAD_OVERHEAD = 64


def request_limits(config: CoordinatorConfig) -> dict[str, int]:
    """Largest request body each method accepts."""
    return {"CheckIn": _SMALL_REQUEST_BYTES, "Download": _SMALL_REQUEST_BYTES, "Upload": config.max_payload_bytes + _UPLOAD_OVERHEAD}


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses a call whose metadata holds no enrolled token before its request is read or parsed."""

    def __init__(self, coordinator: Coordinator):
        self._coordinator = coordinator
        self._refuse = grpc.unary_unary_rpc_method_handler(lambda _request, context: context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked device token"))

    def intercept_service(self, continuation, handler_call_details):
        try:
            self._coordinator.authenticate(token_from_metadata(handler_call_details.invocation_metadata))
        except Unauthenticated:
            log.warning("%s refused: unknown or revoked device token", handler_call_details.method)
            return self._refuse
        return continuation(handler_call_details)


def _handler(coordinator: Coordinator, method: str, limit: int):
    request_type, _ = METHODS[method]

    def handle(raw: bytes, context: grpc.ServicerContext) -> bytes:
        if len(raw) > limit:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{method} request of {len(raw)} bytes exceeds its limit of {limit}")
        try:
            device = coordinator.authenticate(token_from_metadata(context.invocation_metadata()))
            request = request_type.from_bytes(raw)
            if method == "Download":
                return coordinator.download(request.model_version, request.include_tflite)
            if method == "CheckIn":
                return coordinator.check_in(device).to_bytes()
            return coordinator.upload(device, request.payload, request.examples).to_bytes()
        except Unauthenticated as error:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(error))
        except (ProtocolError, TypeError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {method} request: {error}")
        except KeyError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except Exception as error:  # noqa: BLE001 - a device must never crash the coordinator
            log.exception("%s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}")

    return grpc.unary_unary_rpc_method_handler(handle)


def start_server(coordinator: Coordinator, config: CoordinatorConfig) -> tuple[grpc.Server, int]:
    """Start serving; returns (server, bound port)."""
    limits = request_limits(config)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=min(config.server_threads, config.max_concurrent_rpcs)),
        interceptors=[TokenInterceptor(coordinator)],
        options=[("grpc.max_receive_message_length", max(limits.values()))],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {m: _handler(coordinator, m, limits[m]) for m in METHODS})])
    if config.tls_cert:
        credentials = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
        port = server.add_secure_port(config.address, credentials)
    else:
        port = server.add_insecure_port(config.address)
    if port == 0:
        raise OSError(f"cannot listen on {config.address}")
    server.start()
    return server, port


def serve(config: CoordinatorConfig, *, grace_s: float = 5.0) -> dict:
    """Run rounds until ``config.rounds`` are closed (then give devices ``grace_s`` to hear DONE)."""
    coordinator = Coordinator(config)
    server, port = start_server(coordinator, config)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("coordinator listening on %s (port %d, %s), state in %s", config.address, port, "TLS" if config.tls_cert else "plaintext, loopback only", config.state_dir)
    status = None
    if config.status_port is not None:
        status = StatusServer(config.status_host, config.status_port, lambda: coordinator_status(Path(config.state_dir), coordinator.store)).start()
        log.info("status page on http://%s:%d/ (read-only)", config.status_host, status.port)
    try:
        while not stop.is_set() and not coordinator.finished:
            coordinator.tick()
            stop.wait(0.2)
        stop.wait(grace_s if coordinator.finished else 0)
        result = {"finished": coordinator.finished, "rounds": coordinator.store.last_round(), "state_dir": config.state_dir}
    finally:
        if status is not None:
            status.stop()
        server.stop(grace=1).wait()
        coordinator.close()
    return result
