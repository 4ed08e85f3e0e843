"""Pass registry, string specs, option checking, Sequential and instruments."""
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pytest

from compiler.ir import Graph
from compiler.pass_manager import (Pass, PassContext, PassOptionError, PassResult, Sequential,
                             TimingInstrument, VerifyInstrument, parse_pass, parse_pipeline,
                             register_pass)


@register_pass("test-scale")
@dataclass
class ScaleConstants(Pass):
    """Multiplies every constant by ``factor`` (a toy pass for the infrastructure)."""

    factor: float = 1.0
    mode: Literal["all", "none"] = "all"
    layers: list[str] | None = None
    exact = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        count = 0
        if self.mode == "all" and self.factor != 1.0:
            for v in graph.constants:
                v.const = v.const * self.factor
                count += 1
        return PassResult(graph, count > 0, {"scaled": count})


def graph_with_constant():
    g = Graph()
    x = g.add_input("x", (2,), np.float32)
    c = g.add_constant("c", np.ones(2, np.float32))
    y = g.add_node("Add", [x, c]).output
    y.shape, y.dtype = (2,), np.dtype(np.float32)
    g.outputs.append(y)
    return g


def test_string_and_object_forms_are_the_same_pass():
    p = parse_pass("test-scale{factor=2.5,mode=none,layers=[a;b]}")
    assert p == ScaleConstants(factor=2.5, mode="none", layers=["a", "b"])
    assert parse_pass(p.spec()) == p
    assert parse_pass("test-scale") == ScaleConstants()


@pytest.mark.parametrize("spec, message", [
    ("no-such-pass", "unknown pass 'no-such-pass'; registered passes: .*fold-bn"),
    ("test-scale{speed=3}", "has no option 'speed'; its options: factor, mode, layers"),
    ("test-scale{factor=fast}", "factor='fast' is not a valid float"),
    ("test-scale{mode=some}", "mode='some' must be one of all, none"),
    ("test-scale{factor}", "option 'factor' has no value"),
    ("test-scale{factor=1", "cannot parse pass spec"),
])
def test_bad_specs_name_the_problem(spec, message):
    with pytest.raises(PassOptionError, match=message):
        parse_pass(spec)


def test_pipeline_from_comma_separated_string_keeps_braced_commas():
    seq = parse_pipeline("cleanup, test-scale{factor=2,mode=all}")
    assert [p.name for p in seq.passes] == ["cleanup", "test-scale"]
    assert seq.passes[1].factor == 2.0


def test_sequential_collects_stats_and_modified():
    g = graph_with_constant()
    timing = TimingInstrument()
    ctx = PassContext(instruments=[VerifyInstrument(), timing])
    result = Sequential([ScaleConstants(factor=1.0), ScaleConstants(factor=3.0)])(g, ctx)
    assert result.modified
    assert result.stats == {"test-scale": {"scaled": 0}, "test-scale#2": {"scaled": 1}}
    assert np.all(g.value("c").const == 3.0)
    assert [name for name, _ in timing.times][:2] == ["test-scale", "test-scale{factor=3.0}"]
    unchanged = ScaleConstants(factor=1.0)(g, ctx)
    assert not unchanged.modified


def test_verify_instrument_catches_a_broken_pass():
    @register_pass("test-break")
    @dataclass
    class Break(Pass):
        def run(self, graph, ctx):
            graph.outputs[0].producer.set_input(0, graph.outputs[0])  # make a cycle
            return PassResult(graph, True)

    with pytest.raises(AssertionError, match="graph invalid after pass 'test-break'"):
        Break()(graph_with_constant(), PassContext(instruments=[VerifyInstrument()]))


def test_run_must_return_a_pass_result():
    @register_pass("test-bad-return")
    @dataclass
    class BadReturn(Pass):
        def run(self, graph, ctx):
            return graph

    with pytest.raises(TypeError, match="not a PassResult"):
        BadReturn()(graph_with_constant())


def test_numerics_instrument_catches_an_exact_pass_that_changes_outputs():
    from compiler.pass_manager import NumericsInstrument

    @register_pass("test-wrong-but-exact")
    @dataclass
    class WrongButExact(Pass):
        def run(self, graph, ctx):
            for v in graph.constants:
                v.const = v.const + 1.0
            return PassResult(graph, True)

    ctx = PassContext(instruments=[NumericsInstrument()])
    with pytest.raises(AssertionError, match="pass 'test-wrong-but-exact' changed output 0"):
        WrongButExact()(graph_with_constant(), ctx)
    # a pass declared inexact is not held to it
    ScaleConstants(factor=2.0)(graph_with_constant(), PassContext(instruments=[NumericsInstrument()]))


@register_pass("test-needs-scale")
@dataclass
class NeedsScale(Pass):
    """A toy pass that declares ``test-scale`` as its prerequisite."""

    requires = ("test-scale",)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        return PassResult(graph, False, {})


class _Recorder(VerifyInstrument):
    def __init__(self):
        self.seen: list[str] = []

    def before_pass(self, p, graph, ctx):
        self.seen.append(p.name)


def test_required_pass_is_inserted_once_and_seen_by_instruments():
    assert [p.name for p in Sequential([NeedsScale()]).passes] == ["test-scale", "test-needs-scale"]
    already = Sequential([ScaleConstants(factor=2.0), NeedsScale()])
    assert already.passes == [ScaleConstants(factor=2.0), NeedsScale()]  # not inserted again
    assert parse_pipeline("test-needs-scale").spec() == "test-scale,test-needs-scale"
    rec = _Recorder()
    parse_pipeline("test-needs-scale")(graph_with_constant(), PassContext(instruments=[rec]))
    assert rec.seen == ["sequential", "test-scale", "test-needs-scale"]
    rec = _Recorder()  # called on its own, the pass runs its prerequisite first, visibly
    NeedsScale()(graph_with_constant(), PassContext(instruments=[rec]))
    assert rec.seen == ["test-scale", "test-needs-scale"]


def test_quantize_and_mixed_precision_declare_fold_bn():
    for name in ("quantize", "mixed-precision"):
        assert "fold-bn" in parse_pass(name).requires
    assert parse_pipeline("quantize").spec() == "fold-bn,quantize"
    assert parse_pipeline("fold-bn,cleanup,quantize").spec() == "fold-bn,cleanup,quantize"
