"""The gRPC door: ``inference.GRPCInferenceService`` (the Open Inference Protocol's gRPC
service, with Triton's repository extension and ModelConfig), answered as /v2 answers over REST.

Every method is registered without a request deserializer: a call arrives as bytes, and
`Door.call` first authorizes the caller from its metadata (``authorization: Bearer <key>``, as
the HTTP API takes it; the scopes of the /v2 views: none for the server's health and metadata,
``predict`` for the model's, ``manage`` for the repository), and only then parses the message.
ModelInfer goes through the serving exchange (inference.exchange) with its own protocol
(inference.grpc.protocol), which authorizes, throttles, caches, records the history and bounds
the run like every other door; the call's own gRPC deadline caps the run too
(inference.deadlines.caller_deadline).

Every call gets a request id (the client's ``x-request-id`` when it is sane) in the trailing
metadata, and its log line; ModelInfer calls are counted in the inference metrics
(core.request_log, as the WSGI fast path does for its requests). Failures become a gRPC status
with the /v2 message as its details, the machine-readable code in the ``modelforge-code``
trailing metadata, and for a refusal with Retry-After (429, a full queue) a google.rpc.RetryInfo
in the status details plus a ``retry-after`` trailing metadata (seconds).
"""

from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import Executor

import grpc
from django.db import close_old_connections
from google.protobuf import duration_pb2, json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from access.models import Scope
from access.principals import Credential, authorize
from core import request_log
from core.exceptions import DomainError
from inference import deadlines, exchange
from inference.grpc.protocol import CODE_METADATA, GrpcInfer, parameters_of, parse, problem_reply
from inference.routing import ROUTING_METADATA, VERSION_HEADER, VERSION_METADATA
from inference.sessions import model_ready
from inference.v2 import metadata, repository
from inference.v2.model_config import triton_config
from inference.v2.protocol import v2_resolve

logger = logging.getLogger(__name__)

SERVICE = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
REQUEST_ID = "x-request-id"
EXCHANGE = "exchange"  # a method the serving exchange authorizes itself

# The scope each offered method needs, as the /v2 views have it (None: open). Methods not listed
# (shared memory, statistics, trace and log settings, streaming) answer UNIMPLEMENTED.
SCOPES = {
    "ServerLive": None,
    "ServerReady": None,
    "ServerMetadata": None,
    "ModelReady": Scope.PREDICT,
    "ModelMetadata": Scope.PREDICT,
    "ModelConfig": Scope.PREDICT,
    "ModelInfer": EXCHANGE,
    "RepositoryIndex": Scope.MANAGE,
    "RepositoryModelLoad": Scope.MANAGE,
    "RepositoryModelUnload": Scope.MANAGE,
}

# HTTP statuses of the error table as gRPC status codes; any other is INTERNAL.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The methods after the door: each takes its parsed request (the caller already
    authorized) and returns its response message. ModelInfer is the exchange's (`Door`)."""

    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=metadata.not_ready_reason() is None)

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(**metadata.server_metadata())

    def ModelReady(self, request, context):
        # /v2 answers an unknown or unserved model with 404 or 503, which clients read as "not
        # ready"; so is a version whose sessions another call is loading or warming up here.
        try:
            model = v2_resolve(request.name, request.version or None)
            return service_pb2.ModelReadyResponse(ready=model_ready(model))
        except DomainError:
            return service_pb2.ModelReadyResponse(ready=False)

    def ModelMetadata(self, request, context):
        found = metadata.model_metadata(request.name, request.version or None)
        return json_format.ParseDict(found, service_pb2.ModelMetadataResponse())

    def ModelConfig(self, request, context):
        config = json_format.ParseDict(
            triton_config(v2_resolve(request.name, request.version or None)),
            model_config_pb2.ModelConfig(),
            ignore_unknown_fields=True,
        )
        return service_pb2.ModelConfigResponse(config=config)

    def RepositoryIndex(self, request, context):
        index = repository.repository_index(ready_only=request.ready)
        return service_pb2.RepositoryIndexResponse(
            models=[service_pb2.RepositoryIndexResponse.ModelIndex(**entry) for entry in index]
        )

    def RepositoryModelLoad(self, request, context):
        repository.repository_load(request.model_name, parameters_of(request.parameters))
        return service_pb2.RepositoryModelLoadResponse()

    def RepositoryModelUnload(self, request, context):
        repository.repository_unload(request.model_name)
        return service_pb2.RepositoryModelUnloadResponse()


class Door:
    """Calls as bytes in, bytes out: authorize, parse, answer, and turn failures into statuses.

    The server is grpc's asyncio one (inference.grpc.server): a call is received on the event
    loop and answered by `answer` on a thread of `executor` (the exchange blocks: the database,
    Redis, a batch being run), which hands back the reply; the status and trailing metadata are
    set on the loop. One hand-off each way, where grpc's thread-pool server takes several per
    call (measured: docs/performance.md)."""

    def __init__(self, service: InferenceService, executor: Executor) -> None:
        self.service = service
        self.executor = executor

    def handler(self) -> grpc.GenericRpcHandler:
        handlers = {}
        for method in SERVICE.methods:
            if method.name not in SCOPES:
                continue
            request_type = getattr(service_pb2, method.input_type.name)

            async def behaviour(body: bytes, context, name=method.name, request_type=request_type) -> bytes:
                return await self.call(name, request_type, body, context)

            # No request_deserializer: the bytes reach `call`, which parses them after the key.
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour)
        return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)

    async def call(self, name: str, request_type: type, body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        reply, request_id = await asyncio.get_running_loop().run_in_executor(
            self.executor,
            self.answer,
            name,
            request_type,
            body,
            dict(context.invocation_metadata()),
            _time_left(context),
        )
        trailing = [(REQUEST_ID, request_id)]
        if reply.status == 200:
            version = reply.headers.get(VERSION_HEADER)
            if version is not None:  # which version answered (ModelInfer; an alias may route)
                trailing.append((VERSION_METADATA, version))
            context.set_trailing_metadata(trailing)
            return reply.content
        await self._abort(context, reply, trailing)

    def answer(
        self, name: str, request_type: type, body: bytes, invocation: dict, time_left: float | None
    ) -> tuple[exchange.Reply, str]:
        """The reply to one call and its request id, on a thread of the executor."""
        request_log.begin(
            method="GRPC",
            path=f"/{SERVICE.full_name}/{name}",
            incoming_id=invocation.get(REQUEST_ID),
            inference=name == "ModelInfer",
        )
        credential = Credential.from_header(invocation.get("authorization"))
        try:
            with deadlines.caller_deadline(time_left):
                reply = self._answer(name, request_type, body, credential, invocation)
        except Exception as exc:  # answered as the protocol's error; unexpected ones logged there
            reply = problem_reply(exc)
        finally:
            close_old_connections()  # as Django does at the end of each request
        return reply, request_log.finish(reply.status, retry_after="Retry-After" in reply.headers)

    def _answer(self, name, request_type, body, credential, invocation: dict) -> exchange.Reply:
        scope = SCOPES[name]
        if scope == EXCHANGE:
            headers = {ROUTING_METADATA: invocation.get(ROUTING_METADATA)}
            return exchange.answer(
                credential, exchange.ModelRef(), exchange.Incoming(len(body), lambda: body, headers), GrpcInfer(body)
            )
        if scope is not None:
            authorize(credential, scope=scope, permissions=None)
        response = getattr(self.service, name)(parse(request_type, body), None)
        return exchange.Reply(200, response.SerializeToString())

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, reply: exchange.Reply, trailing: list) -> None:
        code = STATUS_CODES.get(reply.status, grpc.StatusCode.INTERNAL)
        detail = reply.content.decode()
        trailing.append((CODE_METADATA, reply.headers[CODE_METADATA]))
        retry_after = reply.headers.get("Retry-After")
        if retry_after:
            trailing.append(("retry-after", retry_after))
            # google.rpc.RetryInfo in the status details (grpc-status-details-bin), which
            # grpcio-status's rpc_status.from_call and other languages' clients read.
            info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after)))
            status = status_pb2.Status(code=getattr(code_pb2, code.name), message=detail)
            status.details.add().Pack(info)
            trailing.extend(rpc_status.to_status(status).trailing_metadata)
        context.set_trailing_metadata(trailing)
        await context.abort(code, detail)


def _time_left(context: grpc.aio.ServicerContext) -> float | None:
    """The seconds the client still waits for this call, None when it set no deadline."""
    left = context.time_remaining()
    return None if left is None or not math.isfinite(left) or left > 10**8 else left
