"""compile() checks the built code against the interpreter (#22 item 2)."""
import numpy as np
import pytest

import compiler
from compiler import VerificationError
from compiler.verify import first_mismatch
from conftest import model_path


def test_compile_verifies_by_default_and_names_the_wrong_output(monkeypatch):
    import importlib

    build = importlib.import_module("targets.tvm.build")  # the module, not its build()

    real_run = build.run
    monkeypatch.setattr(build, "run", lambda built, inputs: [o + 1e-2 for o in
                                                              real_run(built, inputs)])
    with pytest.raises(VerificationError, match="output 'logits': max abs error"):
        compiler.compile(model_path("tinynet"), passes=["fold-bn"])
    cm = compiler.compile(model_path("tinynet"), passes=["fold-bn"], verify=False)
    assert cm.verification is None


def test_a_correct_build_passes():
    cm = compiler.compile(model_path("tinynet"), passes=["fold-bn"])
    assert cm.verification == {"status": "passed", "seed": 0, "outputs": 1}


def test_remote_targets_are_skipped_with_a_reason(monkeypatch):
    monkeypatch.setenv("COMPILER_BOARD", "off")
    cm = compiler.compile(model_path("tinynet"), target="cortex-a72")
    assert cm.verification["status"] == "skipped" and "remotely" in cm.verification["reason"]


def test_integer_outputs_are_bit_exact_and_nan_positions_must_match():
    a = np.arange(6, dtype=np.int8)
    assert first_mismatch("q", a, a.copy()) is None
    b = a.copy()
    b[3] += 1
    assert "1 of 6 integer values differ" in first_mismatch("q", b, a)
    f = np.array([1.0, np.nan, np.inf], np.float32)
    assert first_mismatch("y", f, f.copy()) is None
    assert "NaN" in first_mismatch("y", np.array([1.0, 0.0, np.inf], np.float32), f)
    assert "Inf" in first_mismatch("y", np.array([1.0, np.nan, -np.inf], np.float32), f)
