"""`python -m edge_runtime join`: a device taking part in federated rounds (numpy, tflite-runtime, grpcio).

Loop: check in; when given a task, check the recipe is within sane bounds, fetch the model if
newer (architecture once, weights per version, each verified by SHA-256), train locally on
the device's own beats, compress (with error feedback for biased codecs), sign with the
device's update key and upload; or, when the coordinator runs secure aggregation, take part
in its four steps (secure_participant.py) so that only the sum of the round's updates is
ever unmasked. The connection is TLS pinned to the coordinator's certificate
(``--tls-ca``); plaintext needs an explicit ``--insecure``. The token travels only in call
metadata. Transient network failures (coordinator restarting, link down) are retried with
exponential backoff; a rejection is logged and the device moves on to the next round.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from edge_runtime.codecs import CODECS, ErrorFeedback
from edge_runtime.identity import bearer_metadata, device_id, update_key
from edge_runtime.interpreter import TrainableModel
from edge_runtime.local_data import LocalData
from edge_runtime.local_training import LocalTrainingConfig, load_feedback, save_weights, train_locally
from edge_runtime.payload import Payload, pack
from edge_runtime.masking import MaskingError
from edge_runtime.protocol import (
    DONE, METHODS, SERVICE, TASK, CheckInReply, CheckInRequest, DownloadRequest, MaskedInputRequest, Message, ShareKeysRequest, UploadRequest,
)
from edge_runtime.secure_participant import SecureParticipant

_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL}


class JoinError(RuntimeError):
    """The coordinator refused this device (bad token) or sent something that fails verification."""


class CoordinatorClient:
    """Unary calls with raw-bytes (de)serialisation, the token as metadata, and retry with exponential backoff.

    ``tls_ca`` pins the coordinator: its certificate (or its private CA) is the only trust root.
    """

    def __init__(self, server: str, token: str, *, tls_ca: Path | None = None, insecure: bool = False, max_retries: int = 30, timeout_s: float = 30.0):
        if tls_ca is not None:
            self.channel = grpc.secure_channel(server, grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes()))
        elif insecure:
            self.channel = grpc.insecure_channel(server)
        else:
            raise JoinError("no --tls-ca: give the coordinator's certificate to pin (or --insecure for a loopback test)")
        self._metadata = bearer_metadata(token)
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self._calls = {name: self.channel.unary_unary(f"/{SERVICE}/{name}") for name in METHODS}

    def call(self, method: str, request: Message) -> Message:
        reply_type = METHODS[method][1]
        delay = 0.2
        for attempt in range(self.max_retries + 1):
            try:
                return reply_type.from_bytes(self._calls[method](request.to_bytes(), timeout=self.timeout_s, metadata=self._metadata))
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise JoinError(f"coordinator refused this device: {error.details()}") from error
                if code not in _TRANSIENT or attempt == self.max_retries:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.channel.close()


def _verified(data: bytes, sha256: str, what: str) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha256:
        raise JoinError(f"{what} does not match its announced SHA-256 {sha256[:16]}...: refusing it")
    return data


RECIPE_LIMITS = {"epochs": 20, "batch_size": 1024, "learning_rate": 1.0}


def checked_recipe(reply: CheckInReply) -> LocalTrainingConfig:
    """The task's training recipe, refused when outside what a watch should run."""
    if reply.codec not in CODECS:
        raise JoinError(f"coordinator asked for unknown codec {reply.codec!r}")
    if not (1 <= reply.epochs <= RECIPE_LIMITS["epochs"] and 1 <= reply.batch_size <= RECIPE_LIMITS["batch_size"]
            and 0 < reply.learning_rate <= RECIPE_LIMITS["learning_rate"]):
        raise JoinError(f"coordinator's recipe is out of bounds {RECIPE_LIMITS}: epochs {reply.epochs}, batch {reply.batch_size}, lr {reply.learning_rate}")
    return LocalTrainingConfig(epochs=reply.epochs, batch_size=reply.batch_size, learning_rate=reply.learning_rate, seed=reply.seed % 2**32)


class RoundOver(Exception):
    """The coordinator ended this round for the device (abandoned, or a message refused)."""


def _until_ready(client: CoordinatorClient, method: str, first: Message, poll: Message) -> Message:
    """Send ``first``, then ``poll`` (the same step with an empty body) until the step is ready."""
    request = first
    while True:
        reply = client.call(method, request)
        if reply.reason:
            raise RoundOver(f"{method}: {reply.reason}")
        if reply.ready:
            return reply
        time.sleep(max(reply.retry_after_s, 0.05))
        request = poll


def secure_upload(client: CoordinatorClient, device: str, reply: CheckInReply, update: np.ndarray) -> tuple[bool, str]:
    """Secure aggregation's four steps for one trained update: (counted in the sum, why not)."""
    participant = SecureParticipant(device, reply.round, reply.model_version)
    try:
        participant.join_cohort(_until_ready(client, "AdvertiseKeys", participant.advertisement(), participant.advertisement()))
        participant.hold(_until_ready(client, "ShareKeys", participant.shares(), ShareKeysRequest(round=reply.round)))
        announced = _until_ready(client, "MaskedInput", participant.masked_input(update, reply.seed), MaskedInputRequest(round=reply.round))
        result = client.call("Unmask", participant.reveal(announced))
    except (RoundOver, MaskingError) as error:
        return False, str(error)
    return result.accepted, result.reason


def join(
    server: str, token: str, data: LocalData, *, tls_ca: Path | None = None, insecure: bool = False, state_dir: Path | None = None,
    max_rounds: int | None = None, log=print,
) -> dict:
    """Take part until the coordinator says done (or ``max_rounds`` uploads); returns counts."""
    client = CoordinatorClient(server, token, tls_ca=tls_ca, insecure=insecure)
    key, device = update_key(token), device_id(token)
    scratch = None if state_dir else tempfile.TemporaryDirectory(prefix="fedbeat-device-")
    state = Path(state_dir or scratch.name)
    state.mkdir(parents=True, exist_ok=True)
    model: TrainableModel | None = None
    version, weights = "", np.zeros(0, np.float32)
    feedback: ErrorFeedback | None = None
    counts = {"uploaded": 0, "accepted": 0, "rejected": 0}
    try:
        while max_rounds is None or counts["uploaded"] < max_rounds:
            reply: CheckInReply = client.call("CheckIn", CheckInRequest(model_version=version))
            if reply.status == DONE:
                break
            if reply.status != TASK:
                time.sleep(max(reply.retry_after_s, 0.05))
                continue
            config = checked_recipe(reply)
            if reply.model_version != version or model is None:
                download = client.call("Download", DownloadRequest(model_version=reply.model_version, include_tflite=model is None))
                if model is None:
                    path = state / "model_train.tflite"
                    path.write_bytes(_verified(download.tflite, reply.tflite_sha256, "model_train.tflite"))
                    model = TrainableModel(path)
                weights = np.frombuffer(_verified(download.weights, reply.weights_sha256, "weights"), np.float32).copy()
                version = reply.model_version
            manifest = json.loads(reply.manifest_json)
            update, losses = train_locally(
                model, weights, beat=data.beat, log_rr=data.log_rr, label=data.label,
                class_weights=np.array(manifest["class_weights"], np.float32), config=config,
            )
            if reply.secure_aggregation:
                accepted, reason = secure_upload(client, device, reply, update)
                sent = 4 * update.size
            else:
                feedback = feedback or load_feedback(state / "residual.npz", update.size, manifest["layout_hash"])
                body = feedback.encode(reply.codec, update, reply.seed)
                save_weights(state / "residual.npz", feedback.residual, manifest["layout_hash"])
                payload = pack(Payload(reply.codec, reply.round, version, manifest["layout_hash"], reply.seed, update.size, body), key)
                result = client.call("Upload", UploadRequest(payload=payload, examples=int(data.label.size * config.epochs)))
                accepted, reason, sent = result.accepted, result.reason, len(payload)
            counts["uploaded"] += 1
            counts["accepted" if accepted else "rejected"] += 1
            log(json.dumps({"round": reply.round, "loss_first": losses[0], "loss_last": losses[-1], "bytes": sent, "accepted": accepted, "reason": reason, "secure": reply.secure_aggregation}))
    finally:
        client.close()
        if scratch is not None:
            scratch.cleanup()
    return counts


def main_join(args) -> dict:
    data = LocalData.load(Path(args.data))  # the federated task trains on these beats, from the coordinator's weights only
    return join(
        args.server, args.token, data, tls_ca=Path(args.tls_ca) if args.tls_ca else None, insecure=args.insecure,
        state_dir=Path(args.state_dir) if args.state_dir else None, max_rounds=args.max_rounds, log=lambda line: print(line, file=sys.stderr, flush=True),
    )
