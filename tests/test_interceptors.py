"""The interceptors' shared pieces: one table of handler kinds, one per-method cache of wrapped handlers."""

import grpc

from gradserve.server.rpc.interceptors import KINDS, HandlerCache, kind_of, rewrapped


def _handler(request_streaming: bool, response_streaming: bool):
    return KINDS[request_streaming, response_streaming].factory(lambda request, context: request,
                                                                request_deserializer=bytes, response_serializer=bytes)


def test_every_kind_rewraps_into_the_same_kind_and_serializers():
    """A rewrapped handler keeps its kind and serializers and runs the new behaviour."""
    for streaming, kind in KINDS.items():
        handler = _handler(*streaming)
        assert kind_of(handler) is kind
        new = rewrapped(handler, lambda request, context: "new")
        assert (new.request_streaming, new.response_streaming) == streaming
        assert new.request_deserializer is bytes and new.response_serializer is bytes
        assert getattr(new, kind.attribute)(None, None) == "new"


def test_unknown_method_is_treated_as_unary():
    """A method the server lacks (no handler) is unary-unary: the kind a refusal is sent as."""
    assert kind_of(None).factory is grpc.unary_unary_rpc_method_handler


def test_cache_wraps_each_method_once_and_again_for_a_new_handler():
    """The same handler of a method is wrapped once; another handler for the method is wrapped anew."""
    calls = []
    cache = HandlerCache(lambda method, handler: calls.append(method) or rewrapped(handler, handler.unary_unary))
    first, second = _handler(False, False), _handler(False, False)
    wrapped = cache.get("/s/M", first)
    assert cache.get("/s/M", first) is wrapped and calls == ["/s/M"]
    assert cache.get("/s/N", first) is not wrapped and calls == ["/s/M", "/s/N"]
    assert cache.get("/s/M", second) is not wrapped and calls == ["/s/M", "/s/N", "/s/M"]
