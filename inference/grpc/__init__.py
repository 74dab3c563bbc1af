"""The Open Inference Protocol over gRPC (``inference.GRPCInferenceService``, as Triton and
KServe serve it): the service (inference.grpc.service), its infer protocol over the serving
exchange (inference.grpc.protocol) and the server processes (inference.grpc.server, run by
``manage.py serve_grpc``). The messages and stubs are tritonclient's (tritonclient.grpc)."""
