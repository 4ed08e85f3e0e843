"""Run-time checks in the built code (`targets/tvm/checks.py`, #22 item 1): integer Div
by a zero element fails naming the node, in every build pipeline (default, arena,
tuned) and through the command line; nonzero divisors still give onnxruntime's
outputs; INT_MIN / -1 never raises a signal.

The built code runs in a child process: a division that traps would kill it (SIGFPE)
rather than the test session."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
from conftest import ort_run

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "compiler"]
A = np.array([7, -7, 7, -7, 0, -2**31 + 1], np.int32)
B_OK = np.array([1, 2, 2, -2, 3, -1], np.int32)  # onnxruntime dies of SIGFPE on INT_MIN/-1
MESSAGE = "node 'divide' (Div): integer division by zero (the divisor 'b' has a zero element"


def div_model(dtype=TensorProto.INT32, divisor=None):
    """out = a / b (``divisor``: b as a constant instead of an input)."""
    a = helper.make_tensor_value_info("a", dtype, [6])
    out = helper.make_tensor_value_info("out", dtype, [6])
    inputs, inits = [a], []
    if divisor is None:
        inputs.append(helper.make_tensor_value_info("b", dtype, [6]))
    else:
        inits.append(helper.make_tensor("b", dtype, [6], list(divisor)))
    g = helper.make_graph([helper.make_node("Div", ["a", "b"], ["out"], name="divide")],
                          "g", inputs, [out], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _child(build: str, tmp_path) -> dict:
    """Build ``div_model`` in a child with ``build`` (Python: ``cm = ...``) and run it on
    a nonzero divisor, INT_MIN / -1, some zeros and all zeros: what each gave."""
    onnx.save(div_model(), tmp_path / "div.onnx")
    code = textwrap.dedent(f"""
        import json, sys, numpy as np
        sys.path.insert(0, {str(ROOT)!r})
        import compiler
        from targets import get_target
        model = {str(tmp_path / "div.onnx")!r}
        {build}
        a = np.array({A.tolist()}, np.int32)
        cases = {{"ok": {B_OK.tolist()}, "some zeros": [0, 2, 0, -2, 3, -1],
                  "all zeros": [0] * 6}}
        got = {{}}
        for label, b in cases.items():
            try:
                got[label] = cm.run({{"a": a, "b": np.array(b, np.int32)}})[0].tolist()
            except compiler.OpValidationError as exc:
                got[label] = "OpValidationError: " + str(exc)
        got["int_min"] = cm.run({{"a": np.full(6, -2**31, np.int32),
                                  "b": np.full(6, -1, np.int32)}})[0].tolist()
        print(json.dumps(got))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]  # (-8: SIGFPE)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(got: dict) -> None:
    want = ort_run(div_model(), {"a": A, "b": B_OK})[0]
    assert got["ok"] == want.tolist()
    for label in ("some zeros", "all zeros"):
        assert got[label].startswith("OpValidationError: " + MESSAGE), got[label]
    assert got["int_min"] == [-2**31] * 6  # wraps (as numpy does): no SIGFPE


@pytest.mark.parametrize("memory", ["tvm", "arena"])
def test_integer_division_by_zero_fails_naming_the_node(memory, tmp_path):
    _check(_child(f"cm = compiler.compile(model, passes=[], verify=False, "
                  f"target=get_target('host').with_memory({memory!r}))", tmp_path))


@pytest.mark.slow
def test_integer_division_check_survives_the_tuned_pipeline(tmp_path):
    """trials=0: MetaSchedule's fusion and database pipeline without a search; the check
    kernel is not a tuning task (only the fused division is)."""
    got = _child(f"cm = compiler.compile(model, passes=[], verify=False, tune={{'trials': 0, "
                 f"'database': {str(tmp_path / 'db.json')!r}}}); "
                 "print(json.dumps(cm.tuning), file=sys.stderr)", tmp_path)
    _check(got)


def test_check_kernel_is_not_a_tuning_task():
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from targets import get_target
    from targets.tvm.tuning import _scheduled

    mod = get_target("host").lower(compiler.compile(div_model(), passes=[], build=False,
                                                    verify=False).graph)
    tasks = ms.relax_integration.extract_tasks(relax.get_pipeline("zero")(mod),
                                               tvm.target.Target("llvm"))
    names = {t.task_name: _scheduled(t) for t in tasks}
    assert sorted(names.values()) == [False, True], names  # the division; the check


def test_constant_zero_divisor_is_refused_at_import():
    with pytest.raises(compiler.OpValidationError,
                       match="integer division by zero: the divisor 'b' is a constant"):
        compiler.compile(div_model(divisor=[1, 2, 0, 1, 1, 1]), passes=[], build=False)
    # a nonzero constant divisor needs no check, and matches onnxruntime
    model = div_model(divisor=[3, -2, 2, 5, 1, -1])
    cm = compiler.compile(model, passes=[], verify=False)
    assert "nonzero" not in cm.target.lower(cm.graph).script()
    np.testing.assert_array_equal(cm.run({"a": A})[0], ort_run(model, {"a": A})[0])


def test_integer_mod_is_refused_clearly():
    a = helper.make_tensor_value_info("a", TensorProto.INT32, [6])
    b = helper.make_tensor_value_info("b", TensorProto.INT32, [6])
    out = helper.make_tensor_value_info("out", TensorProto.INT32, [6])
    g = helper.make_graph([helper.make_node("Mod", ["a", "b"], ["out"])], "g", [a, b], [out])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    with pytest.raises(compiler.UnsupportedOpError, match="unsupported op 'Mod'"):
        compiler.compile(model, passes=[], build=False)


def test_cli_run_prints_one_error_line(tmp_path):
    compiler.compile(div_model(), passes=[], verify=False).save(tmp_path / "art")
    np.save(tmp_path / "a.npy", A)
    np.save(tmp_path / "b.npy", np.array([0, 2, 2, -2, 3, -1], np.int32))
    done = subprocess.run(CLI + ["run", str(tmp_path / "art"), "--input",
                                 f"a={tmp_path / 'a.npy'}", "--input",
                                 f"b={tmp_path / 'b.npy'}"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines() == ["error: " + MESSAGE
                                                + "; onnxruntime refuses it too)"]


def test_check_failure_is_found_in_an_rpc_error_string():
    from targets.tvm.checks import MARKER, check_failure

    remote = ("RPCError: Error caught from RPC call:\nTraceback (most recent call last):\n"
              f"  ...\nValueError: {MARKER}{MESSAGE}; x)\n")
    found = check_failure(RuntimeError(remote))
    assert isinstance(found, compiler.OpValidationError) and str(found) == MESSAGE + "; x)"
    assert check_failure(RuntimeError("ValueError: something else")) is None
