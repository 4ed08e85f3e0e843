"""NaN, +-Inf, denormals and float max through every float op: the interpreter and the
host TVM build must give what onnxruntime gives (#22 item 1)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
from conftest import ort_run

F32MAX = np.finfo(np.float32).max
SPECIAL = np.array([np.nan, np.inf, -np.inf, F32MAX, -F32MAX, 1e-40, -1e-40, 0.0, -0.0,
                    1.0, -1.0, 2.5, -3.5, 7.0, 0.5, -0.25], np.float32)
X = np.stack([SPECIAL, SPECIAL[::-1]]).reshape(1, 2, 4, 4)
Y = np.roll(SPECIAL, 3)[None, None].repeat(2, axis=1).reshape(1, 2, 4, 4)

# op -> (attrs, number of inputs); shapes are (1, 2, 4, 4)
UNARY = {"Relu": {}, "Abs": {}, "Neg": {}, "Sigmoid": {}, "Tanh": {}, "Exp": {},
         "Sqrt": {}, "Log": {}, "Floor": {}, "Ceil": {}, "Round": {}, "Sign": {},
         "Reciprocal": {}, "Softplus": {}, "Erf": {}, "Sin": {}, "Cos": {},
         "LeakyRelu": {"alpha": 0.1}, "Elu": {}, "HardSigmoid": {}, "HardSwish": {},
         "Softmax": {"axis": -1}, "LogSoftmax": {"axis": -1},
         "GlobalAveragePool": {}, "Identity": {},
         "AveragePool": {"kernel_shape": [2, 2], "strides": [2, 2]},
         "ReduceMean": {"axes": [3]}, "ReduceSum": None, "ReduceProd": {"axes": [3]},
         "Flatten": {}, "Transpose": {"perm": [0, 1, 3, 2]}}
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean"]
CLIP = ["Clip"]


def _model(op, attrs, n_inputs):
    names = ["x", "y", "z"][:n_inputs]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 4, 4]) for n in names]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, None)
    inits = []
    if op == "Clip":
        inits = [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
                 helper.make_tensor("hi", TensorProto.FLOAT, [], [6.0])]
        names = ["x", "lo", "hi"]
    node = helper.make_node(op, names, ["out"], **(attrs or {}))
    g = helper.make_graph([node], "g", inputs, [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


# onnxruntime's max-reductions and MaxPool keep a NaN only when it comes first in the
# window ([nan, 1] -> nan, [1, nan] -> 1): no order-free semantics to match, so these
# see every special value but NaN
NAN_ORDER_DEPENDENT = [("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, 1),
                       ("MaxPool", {"kernel_shape": [1, 1]}, 1),
                       ("GlobalMaxPool", {}, 1),
                       ("ReduceMax", {"axes": [3]}, 1), ("ReduceMin", {"axes": [3]}, 1)]
CASES = ([(op, attrs, 1) for op, attrs in UNARY.items() if attrs is not None]
         + [(op, {}, 2) for op in BINARY] + [("Clip", {}, 1)])


@pytest.mark.parametrize("op, attrs, n", CASES, ids=[c[0] for c in CASES])
def test_special_values_match_onnxruntime(op, attrs, n):
    _check(op, attrs, n, X, Y)


@pytest.mark.parametrize("op, attrs, n", NAN_ORDER_DEPENDENT,
                         ids=[f"{c[0]}{i}" for i, c in enumerate(NAN_ORDER_DEPENDENT)])
def test_max_reductions_match_onnxruntime_without_nan(op, attrs, n):
    _check(op, attrs, n, np.nan_to_num(X, nan=-2.0), None)


def _check(op, attrs, n, x, y):
    model = _model(op, attrs, n)
    feeds = {"x": x, "y": y}
    feeds = {k: feeds[k] for k in ["x", "y"][:n]}
    want = ort_run(model, feeds)[0]
    cm = compiler.compile(model, passes=[], verify=False)
    interp = compiler.Interpreter(cm.graph).run(feeds)[0]
    np.testing.assert_allclose(interp, want, rtol=1e-5, atol=1e-6, equal_nan=True,
                               err_msg=f"{op}: interpreter vs onnxruntime")
    got = cm.run(feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, equal_nan=True,
                               err_msg=f"{op}: host TVM build vs onnxruntime")


def _int_div_model(dtype=TensorProto.INT32):
    a = helper.make_tensor_value_info("a", dtype, [6])
    b = helper.make_tensor_value_info("b", dtype, [6])
    out = helper.make_tensor_value_info("out", dtype, [6])
    g = helper.make_graph([helper.make_node("Div", ["a", "b"], ["out"])], "g", [a, b], [out])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_integer_division_by_zero_is_an_error_in_the_interpreter():
    cm = compiler.compile(_int_div_model(), passes=[], verify=False)
    a = np.array([7, -7, 7, -7, 0, -2**31], np.int32)
    b = np.array([0, 2, 2, -2, 0, -1], np.int32)
    node = cm.graph.nodes[0].name  # named like the built code's error names it
    with pytest.raises(compiler.OpValidationError,
                       match=rf"^node '{node}' \(Div\): integer division by zero"):
        compiler.Interpreter(cm.graph).run({"a": a, "b": b})
    a[5] = -2**31 + 1  # onnxruntime itself dies of SIGFPE on INT_MIN / -1
    ok = np.array([1, 2, 2, -2, 3, -1], np.int32)  # matches onnxruntime without zeros
    want = ort_run(_int_div_model(), {"a": a, "b": ok})[0]
    np.testing.assert_array_equal(compiler.Interpreter(cm.graph).run({"a": a, "b": ok})[0],
                                  want)


# the built code refuses a zero divisor too, naming the node: tests/tvm_tests/test_runtime_checks.py


def test_int64_conv_weights_are_refused_at_import():
    from onnx import numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.int64), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "g", [x], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(compiler.OpValidationError, match="W is int64 but X is float32"):
        compiler.import_model(m)
