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
