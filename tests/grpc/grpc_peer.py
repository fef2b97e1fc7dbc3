#!/usr/bin/env python3
"""Real gRPC peers (grpcio) for Shardgate's end-to-end tests.

  grpc_peer.py serve ADDR NAME   a server for service test.Echo, answering as NAME;
                                 prints "listening" once bound
  grpc_peer.py call TARGET       runs the client checks against TARGET (the gateway)
                                 and prints one JSON object with what it saw

Messages are raw bytes (no protobuf schema needed): the service is registered with
a generic handler, and the client sends and receives bytes.
"""
import json
import sys
import time
from concurrent import futures

import grpc


def serve(addr, name):
    def unary(request, context):
        meta = dict(context.invocation_metadata())
        context.set_trailing_metadata((("x-backend", name), ("x-seen-header", meta.get("x-test", ""))))
        return name.encode() + b":" + request

    def server_stream(request, context):
        n = int(request.decode() or "1")
        for i in range(n):
            yield f"{name}:{i}".encode()

    def client_stream(request_iterator, context):
        total = 0
        count = 0
        for msg in request_iterator:
            total += len(msg)
            count += 1
        return f"{name}:{count}:{total}".encode()

    def fail(request, context):
        # A trailers-only answer: status and message, no body.
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def slow(request, context):
        time.sleep(float(request.decode() or "1"))
        return b"late"

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    server.add_insecure_port(addr)
    server.start()
    print("listening", flush=True)
    server.wait_for_termination()


def call(target):
    out = {}
    with grpc.insecure_channel(target) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        unary = ch.unary_unary("/test.Echo/Unary")
        resp, c = unary.with_call(b"hello", metadata=(("x-test", "yes"),), timeout=10)
        out["unary"] = resp.decode()
        out["unary_trailers"] = dict(c.trailing_metadata())
        # The header-matched rule sends this one to the other backend.
        resp = unary(b"hi", metadata=(("x-route", "v2"),), timeout=10)
        out["unary_v2"] = resp.decode()
        stream = ch.unary_stream("/test.Echo/ServerStream")
        out["server_stream"] = [m.decode() for m in stream(b"200", timeout=10)]
        client = ch.stream_unary("/test.Echo/ClientStream")
        out["client_stream"] = client(iter([b"x" * 1000] * 300), timeout=10).decode()
        try:
            ch.unary_unary("/test.Echo/Fail")(b"", timeout=10)
            out["fail"] = "no error"
        except grpc.RpcError as e:
            out["fail"] = [e.code().name, e.details()]
        try:
            ch.unary_unary("/other.Service/Nope")(b"", timeout=10)
            out["unmatched"] = "no error"
        except grpc.RpcError as e:
            out["unmatched"] = e.code().name
        try:
            ch.unary_unary("/test.Echo/Slow")(b"3", timeout=1)
            out["timeout"] = "no error"
        except grpc.RpcError as e:
            out["timeout"] = e.code().name
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        call(sys.argv[2])
