"""Pipeline files, one accuracy budget, --load, --version, --target options, --tune-db
(#21).  The README's first command (a recipe) runs end to end on the emulated board (slow)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import compiler
from compiler.artifact import CompiledModel
from compiler.cli import main
from compiler.interpreter import Interpreter
from compiler.onnx_io import import_model
from conftest import model_path

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "int8-a72.toml"


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fidelity(graph, n=3):
    """A deterministic, continuous stand-in for accuracy: 1 - relative output error."""
    xs = [np.random.default_rng(i).standard_normal(graph.inputs[0].shape).astype(np.float32)
          for i in range(n)]
    refs = [Interpreter(graph).run([x])[0] for x in xs]

    def evaluate(g):
        interp = Interpreter(g)
        errs = [np.linalg.norm(interp.run([x])[0] - r) / np.linalg.norm(r)
                for x, r in zip(xs, refs)]
        return 1.0 - float(np.mean(errs))

    return evaluate


def test_accuracy_budgets_are_shared_by_the_pipeline():
    graph = import_model(model_path("tinynet"))
    evaluate = fidelity(graph)
    twice = ["prune-search{steps=4,method=magnitude}",
             "prune-search{steps=4,method=magnitude}"]
    # each pass on its own budget: the drops add up past it (what issue 21 measured)
    alone = compiler.compile(graph, passes=[p.replace("{", "{max_drop=0.05,") for p in twice],
                             evaluate=evaluate, build=False)
    assert 1.0 - evaluate(alone.graph) > 0.05 + 1e-6
    # one budget for the pipeline: the second pass gets what the first left
    shared = compiler.compile(graph, passes=twice + ["t-sensitive{ratios=[0.25;0.5]}"],
                              evaluate=evaluate, budget=0.05, build=False)
    assert 1.0 - evaluate(shared.graph) <= 0.05 + 1e-9
    first, second = shared.pass_stats["prune-search"], shared.pass_stats["prune-search#2"]
    assert first["pipeline_baseline"] == pytest.approx(1.0)
    assert first["max_drop"] == pytest.approx(0.05)
    assert second["max_drop"] == pytest.approx(first["budget_left"], abs=1e-5)
    assert second["max_drop"] < 0.05
    assert shared.pass_stats["t-sensitive"]["budget_left"] >= -1e-9
    with pytest.raises(compiler.PassOptionError, match="budget -1 must be a number >= 0"):
        compiler.compile(graph, passes=twice, evaluate=evaluate, budget=-1, build=False)


def test_recipe_unknown_key_and_bad_value(tmp_path, capsys):
    bad = tmp_path / "r.toml"
    bad.write_text('model = "m.onnx"\n[data]\nbudjet = 0.01\n')
    code, _, err = _cli(capsys, "compile", "--config", bad, "-o", tmp_path / "o")
    assert code == 2 and "unknown key [data] 'budjet'" in err and "budget" in err, err
    bad.write_text('model = "m.onnx"\nseed = "zero"\n')
    code, _, err = _cli(capsys, "compile", "--config", bad, "-o", tmp_path / "o")
    assert code == 2 and "'seed' must be int" in err, err
    bad.write_text('modle = "m.onnx"\n')
    code, _, err = _cli(capsys, "compile", "--config", bad, "-o", tmp_path / "o")
    assert code == 2 and "unknown key 'modle'" in err, err
    assert not (tmp_path / "o").exists()


def test_recipe_data_keys_map_to_the_cli_options(tmp_path):
    from compiler.recipe import load_recipe

    (tmp_path / "train").mkdir()
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\ncalibration = "mnist"\neval = "fashion-mnist:test"\n'
                      'train = "train"\ntrain_samples = 64\n')
    got = load_recipe(recipe)
    assert got["calibration"] == "mnist" and got["eval_data"] == "fashion-mnist:test"
    assert Path(got["train_data"]) == tmp_path / "train"  # a folder: relative to the file
    assert got["train_samples"] == 64


def test_the_first_commands_recipe_on_the_host(tmp_path, capsys):
    """examples/int8-a72.toml, its target overridden by a flag: calibration from the data
    set, quantize, build, save, run."""
    out = tmp_path / "int8"
    code, text, err = _cli(capsys, "compile", "--config", RECIPE, "--target", "host",
                           "-o", out)
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"] == "host" and meta["target_options"] is None
    assert meta["pass_stats"]["quantize"]["quantized_layers"] >= 3
    assert "verify: the built code matches" in text
    code, text, err = _cli(capsys, "run", out)
    assert code == 0 and "shape=[1, 10]" in text, err


def test_target_options_are_stored_and_restored(tmp_path, capsys):
    from compiler.target_options import configure_target, parse_target_spec
    from targets import get_target

    name, options = parse_target_spec("cortex-a72 -mattr=+neon,+crc -num-cores=2")
    target = configure_target(get_target(name), options)
    assert target.target_dict()["mattr"] == ["+neon", "+crc"]
    assert target.target_dict()["num-cores"] == 2
    cm = CompiledModel(import_model(model_path("tinynet")), target, None)
    cm.save(tmp_path / "a")
    loaded = CompiledModel.load(tmp_path / "a")
    assert loaded.target.target_dict()["mattr"] == ["+neon", "+crc"]
    assert loaded.target.target_dict()["num-cores"] == 2
    code, _, err = _cli(capsys, "report", model_path("tinynet"), "--target",
                        "cortex-a72 -mcpux=a53")
    assert code == 2 and "no option 'mcpux'" in err and "mcpu" in err, err


def test_target_settings_are_checked_and_the_arena_planner_is_selectable(tmp_path, capsys):
    from compiler.target_options import configure_target
    from targets import get_target

    arena = configure_target(get_target("host"), {"memory": "arena", "layout": "nchw"})
    assert (arena.memory, arena.layout) == ("arena", "nchw")
    for bad, named in (("host -memory=foo", "memory='foo'"), ("host -layout=zz", "layout='zz'")):
        code, _, err = _cli(capsys, "compile", model_path("tinynet"), "-o", tmp_path / "m",
                            "--target", bad)
        assert code == 2 and named in err and err.count("error:") == 1, err
        assert not (tmp_path / "m").exists()
    # a tiling request the graph cannot honour is the user's error (exit 2), not a bug
    code, _, err = _cli(capsys, "compile", model_path("tinynet"), "-o", tmp_path / "m",
                        "--passes", "cleanup,tile{tail=2,labels=1,stem=0}")
    assert code == 2 and err.startswith("error: tail tiling") and "Resize" in err, err
    assert not (tmp_path / "m").exists()


def test_load_registers_a_custom_target_its_artifacts_load(tmp_path, capsys):
    """A target registered by a --load module: listed, configured with options, and an
    artifact built for it loads back onto the same configuration."""
    plugin = tmp_path / "my_target.py"
    plugin.write_text('''
import dataclasses
from targets import get_target, register_target

register_target("cli-test-a53", lambda: dataclasses.replace(
    get_target("cortex-a72"), name="cli-test-a53", description="a user's board"))
''')
    code, out, err = _cli(capsys, "--load", plugin, "targets")
    assert code == 0 and "cli-test-a53" in out and "a user's board" in out, err
    from compiler.target_options import configure_target
    from targets import get_target

    target = configure_target(get_target("cli-test-a53"), {"mcpu": "cortex-a53"})
    CompiledModel(import_model(model_path("tinynet")), target, None).save(tmp_path / "a")
    loaded = CompiledModel.load(tmp_path / "a")
    assert loaded.target.name == "cli-test-a53"
    assert loaded.target.target_dict()["mcpu"] == "cortex-a53"


def test_tune_db_is_applied_without_tune(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_compile(model, **kwargs):
        seen.update(kwargs)
        raise compiler.PassOptionError("stop here")

    monkeypatch.setattr("compiler.api.compile", fake_compile)
    code, _, err = _cli(capsys, "compile", model_path("tinynet"), "-o", tmp_path / "o",
                        "--tune-db", tmp_path / "db.json", "--seed", 7)
    assert code == 2 and "stop here" in err
    assert seen["tune"]["trials"] == 0 and seen["tune"]["database"] == str(tmp_path / "db.json")
    assert seen["tune"]["seed"] == 7 and seen["seed"] == 7


def test_version_and_load_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    from importlib.metadata import version

    assert f"compiler {version('embedded-cnn-compiler')}" in capsys.readouterr().out
    code, _, err = _cli(capsys, "--load", tmp_path / "missing.py", "passes")
    assert code == 2 and "missing.py: no such file" in err


def test_load_registers_a_custom_pass(tmp_path, capsys):
    plugin = tmp_path / "my_passes.py"
    plugin.write_text('''
from dataclasses import dataclass
from compiler import Pass, PassResult, register_pass

@register_pass("cli-test-rename-graph")
@dataclass
class RenameGraph(Pass):
    """Renames the graph (a user's custom pass)."""
    name_to: str = "renamed"

    def run(self, graph, ctx):
        graph.name = self.name_to
        return PassResult(graph, True, {"renamed": 1})
''')
    code, out, err = _cli(capsys, "show", model_path("tinynet"), "--passes",
                          "cli-test-rename-graph{name_to=from_plugin}", "--no-constants",
                          "--load", plugin)
    assert code == 0, err
    assert out.splitlines()[0].startswith("graph from_plugin("), out[:300]
    code, out, err = _cli(capsys, "passes")  # registered for the rest of the process
    assert "cli-test-rename-graph" in out and "a user's custom pass" in out


@pytest.mark.slow
def test_readme_first_command_end_to_end(tmp_path, board):
    """The README's first command (after setup): the recipe compiled for the Cortex-A72,
    then run and timed on the embedded default board (EMULATED; the session's board, so
    the commands do not each start one)."""
    out = tmp_path / "tinynet-int8"
    cli = [sys.executable, "-m", "compiler"]
    for args in (["compile", "--config", str(RECIPE), "-o", str(out)], ["run", str(out)],
                 ["benchmark", str(out), "--repeat", "2"]):
        done = subprocess.run(cli + args, capture_output=True, text=True, timeout=900,
                              cwd=ROOT)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        if args[0] == "run":
            assert "shape=[1, 10]" in done.stdout
        if args[0] == "benchmark":
            assert "EMULATED" in done.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"] == "cortex-a72" and meta["target_options"] == {"mattr": "+neon"}
    assert "quantize" in meta["pipeline"]
