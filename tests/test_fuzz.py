"""Bounded, seeded fuzzing of models and artifacts (#22 item 7).

Every outcome must be a success whose outputs equal onnxruntime's (models) or the
unmutated artifact's (artifacts), or one of our clear exception types: never another
exception (a crash), a signal, a hang or a silently different output.  Imports and
interpreter runs are in-process (numpy cannot signal); the few TVM builds run in a
child process, where generated code could.
"""
import json
import random
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

import compiler
from compiler.artifact import ArtifactError
from compiler.compression import CompressionError
from conftest import model_path, ort_run

CLEAR = (compiler.ModelImportError, compiler.OpValidationError, compiler.UnsupportedOpError,
         compiler.IRError, compiler.InputError, ArtifactError, CompressionError,
         compiler.VerificationError)
N_MODEL_CASES, N_ARTIFACT_CASES = 240, 80


def _base_model() -> onnx.ModelProto:
    m = onnx.load(str(model_path("tinynet")))
    m.ir_version = min(m.ir_version, 8)  # what this onnxruntime reads
    return m


def _mutate_model(m: onnx.ModelProto, rng: random.Random) -> "onnx.ModelProto | bytes":
    g = m.graph
    kind = rng.choice(["bytes", "truncate", "dims", "dtype", "rename", "op_type", "attr",
                       "input_shape", "output_name", "drop_node", "init_data"])
    if kind in ("bytes", "truncate"):
        data = bytearray(m.SerializeToString())
        if kind == "truncate":
            return bytes(data[:rng.randrange(len(data))])
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == "dims" and g.initializer:
        init = rng.choice(g.initializer)
        if init.dims:
            init.dims[rng.randrange(len(init.dims))] = rng.choice([0, 1, 2, 3, 7, 64])
    elif kind == "dtype" and g.initializer:
        rng.choice(g.initializer).data_type = rng.choice(
            [onnx.TensorProto.INT64, onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8,
             onnx.TensorProto.FLOAT16, onnx.TensorProto.STRING, 0, 99])
    elif kind == "rename" and g.node:
        node = rng.choice(g.node)
        if node.input:
            node.input[rng.randrange(len(node.input))] = rng.choice(["nope", "", "../x"])
    elif kind == "op_type" and g.node:
        rng.choice(g.node).op_type = rng.choice(["Relu", "Sigmoid", "Conv", "Add", "Gemm",
                                                 "NoSuchOp", "MaxPool", "Softmax", ""])
    elif kind == "attr" and g.node:
        node = rng.choice(g.node)
        for a in node.attribute:
            if a.ints:
                a.ints[rng.randrange(len(a.ints))] = rng.choice([-1, 0, 1, 2, 5, 100])
            elif a.type == onnx.AttributeProto.INT:
                a.i = rng.choice([-3, -1, 0, 1, 2, 9])
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = rng.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
    elif kind == "input_shape":
        dims = g.input[0].type.tensor_type.shape.dim
        dims[rng.randrange(len(dims))].dim_value = rng.choice([0, 1, 2, 27, 29, 56])
    elif kind == "output_name":
        old = g.output[0].name
        new = rng.choice(["../../x", "/abs/x", "", "a b", "ü"])
        g.output[0].name = new
        for node in g.node:
            for i, o in enumerate(node.output):
                if o == old:
                    node.output[i] = new
    elif kind == "drop_node" and len(g.node) > 1:
        del g.node[rng.randrange(len(g.node))]
    elif kind == "init_data" and g.initializer:
        init = rng.choice(g.initializer)
        if init.raw_data:
            raw = bytearray(init.raw_data)
            raw[rng.randrange(len(raw))] ^= 0xFF  # may become NaN/Inf: compared NaN-aware
            init.raw_data = bytes(raw)
    return m


def _ort_or_none(model, feeds):
    """onnxruntime's outputs, or None when it rejects the model too."""
    try:
        return ort_run(model, feeds)
    except Exception:
        return None


def test_mutated_models_import_and_run_correctly_or_fail_clearly():
    rng = random.Random(22)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    outcomes = {"clear error": 0, "matches onnxruntime": 0, "onnxruntime rejects": 0}
    for case in range(N_MODEL_CASES):
        model = _mutate_model(_base_model(), rng)
        try:
            graph = compiler.import_model(model)
            feeds = {v.name: np.random.default_rng(0).standard_normal(v.shape).astype(v.dtype)
                     if v.dtype.kind == "f" else np.ones(v.shape, v.dtype) for v in graph.inputs}
            got = compiler.Interpreter(graph).run(feeds)
        except CLEAR:
            outcomes["clear error"] += 1
            continue
        except Exception as exc:  # a crash: not one of our clear errors
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc}")
        want = _ort_or_none(model if isinstance(model, onnx.ModelProto)
                            else onnx.load_from_string(model), feeds)
        if want is None:
            outcomes["onnxruntime rejects"] += 1
            continue
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True,
                                       err_msg=f"case {case}: silently different output")
        outcomes["matches onnxruntime"] += 1
    assert outcomes["clear error"] > N_MODEL_CASES // 4, outcomes  # the mutations bite
    assert outcomes["matches onnxruntime"] > 0, outcomes
    del x


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("fz") / "tiny"
    cm = compiler.compile(model_path("tinynet"), passes=["fold-bn"])
    cm.save(out)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    return out, x, cm.run([x])[0]


def _mutate_meta(meta: dict, rng: random.Random) -> "dict | str":
    kind = rng.choice(["drop", "type", "value", "text"])
    keys = list(meta)
    key = rng.choice(keys)
    if kind == "drop":
        del meta[key]
    elif kind == "type":
        meta[key] = rng.choice([None, 1, "x", [], {}, True, 1.5])
    elif kind == "value" and isinstance(meta.get("files"), dict) and meta["files"]:
        name = rng.choice(list(meta["files"]))
        meta["files"][name] = rng.choice(["0" * 64, "", None]) if rng.random() < 0.5 else \
            meta["files"][name]
        if rng.random() < 0.5:
            meta["files"][rng.choice(["../etc", "/abs", "x.so"])] = "0" * 64
    else:
        return json.dumps(meta)[:rng.randrange(len(json.dumps(meta)))]
    return meta


def test_mutated_artifacts_load_correctly_or_fail_clearly(artifact, tmp_path):
    src, x, want = artifact
    rng = random.Random(7)
    clear = 0
    for case in range(N_ARTIFACT_CASES):
        d = tmp_path / f"c{case}"
        shutil.copytree(src, d)
        target = rng.choice(["meta.json", "model.onnx", "model.so"])
        if target == "meta.json":
            meta = _mutate_meta(json.loads((d / "meta.json").read_text()), rng)
            (d / "meta.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
        else:
            data = bytearray((d / target).read_bytes())
            if rng.random() < 0.3:
                data = data[:rng.randrange(len(data))]
            else:
                for _ in range(rng.randint(1, 4)):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            (d / target).write_bytes(bytes(data))
        try:
            loaded = compiler.CompiledModel.load(d)
            got = loaded.run([x])[0]
        except CLEAR:
            clear += 1
            shutil.rmtree(d)
            continue
        except Exception as exc:
            pytest.fail(f"artifact case {case} ({target}): {type(exc).__name__}: {exc}")
        np.testing.assert_array_equal(got, want, err_msg=f"artifact case {case}: silently "
                                                         "different output")
        shutil.rmtree(d)
    assert clear > N_ARTIFACT_CASES // 2


BUILD_CHILD = textwrap.dedent("""
    import random, sys
    sys.path.insert(0, "tests")
    import numpy as np, onnx, compiler
    from test_fuzz import CLEAR, _base_model, _mutate_model
    rng = random.Random(int(sys.argv[1]))
    done = 0
    while done < 3:
        model = _mutate_model(_base_model(), rng)
        try:
            cm = compiler.compile(model, passes=["fold-bn"])  # verify=True: vs interpreter
        except CLEAR as exc:
            print("clear:", type(exc).__name__)
        else:
            print("built and verified")
        done += 1
""")


def test_mutated_models_compile_verified_or_fail_clearly_in_a_child():
    done = subprocess.run([sys.executable, "-c", BUILD_CHILD, "5"], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]  # no crash, no signal
    lines = [l for l in done.stdout.splitlines() if l.startswith(("clear:", "built"))]
    assert len(lines) == 3, done.stdout
