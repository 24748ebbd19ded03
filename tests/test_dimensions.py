"""One check of tensor dimensions for every reader: gradserve.v1 Tensors, RunStream's first message, KServe."""

import numpy as np
import pytest

from gradserve.proto import gradserve_pb2 as pb
from gradserve.proto import kserve_pb2 as kpb
from gradserve.proto import kserve_tensors, streaming
from gradserve.proto.tensors import TensorError, from_tensor

BAD_SHAPES = {
    "negative": ([2, -3], "has a negative dimension"),
    "overflowing": ([1 << 40, 1 << 40, 1 << 20], "more than any array can hold"),  # 2**100 elements: wraps int64
}


@pytest.mark.parametrize("kind", sorted(BAD_SHAPES))
def test_gradserve_tensor_with_bad_shape_is_refused_naming_it(kind):
    """A gradserve.v1 Tensor with a negative or overflowing dimension raises TensorError naming the tensor."""
    shape, message = BAD_SHAPES[kind]
    with pytest.raises(TensorError, match=message) as caught:
        from_tensor(pb.Tensor(dtype=pb.FLOAT32, shape=shape, data=b"\0" * 24), "feed 'x'")
    assert "feed 'x'" in str(caught.value)


@pytest.mark.parametrize("kind", sorted(BAD_SHAPES))
def test_runstream_first_message_with_bad_shape_is_refused(kind):
    """RunStream refuses an announced tensor whose shape is negative or overflows, before making its buffer."""
    shape, message = BAD_SHAPES[kind]
    request = pb.RunRequest(graph=pb.GraphRef(graph_id="g"))
    request.feeds["x"].dtype = pb.FLOAT64
    request.feeds["x"].shape[:] = shape
    with pytest.raises(TensorError, match=message):
        streaming.receive([pb.RunChunk(request=request)], "request", ["feeds", "output_grads"])


@pytest.mark.parametrize("kind", sorted(BAD_SHAPES))
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_kserve_input_with_bad_shape_is_refused(kind, raw):
    """A KServe input with a negative or overflowing shape raises TensorError naming the input (raw and typed)."""
    shape, message = BAD_SHAPES[kind]
    request = kpb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"\0" * 24)
    with pytest.raises(TensorError, match=message) as caught:
        kserve_tensors.request_inputs(request)
    assert "input 'x'" in str(caught.value)


def test_good_shapes_still_read():
    """The same readers take a well-formed tensor (the check refuses only what no array can be)."""
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(from_tensor(pb.Tensor(dtype=pb.FLOAT32, shape=[2, 3], data=array.tobytes())), array)
    request = kpb.ModelInferRequest(model_name="m", raw_input_contents=[array.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=[2, 3])
    assert np.array_equal(kserve_tensors.request_inputs(request)["x"], array)
