"""Tutorial: write your own pass and hand it to compile().

This pass swaps ``Relu6`` (ONNX ``Clip(x, 0, 6)``) for plain ``Relu`` when a user knows
activations never reach 6 -- a typical small, target-specific rewrite.  It is ~15
lines: subclass `Pass`, declare options as dataclass fields, register a name, return a
`PassResult` saying whether anything changed.

Run it:  python tutorials/custom_pass.py
"""
from dataclasses import dataclass

import numpy as np

import compiler
from compiler import Pass, PassContext, PassResult, register_pass


@register_pass("clip-to-relu")
@dataclass
class ClipToRelu(Pass):
    """Replace Clip(min=0, max>=limit) by Relu."""

    limit: float = 6.0
    exact = False  # it changes outputs where activations exceed `limit`

    def run(self, graph: compiler.Graph, ctx: PassContext) -> PassResult:
        replaced = 0
        for node in graph.find("Clip"):
            x, lo, hi = (list(node.inputs) + [None, None])[:3]
            if lo is None or lo.const is None or float(lo.const) != 0.0:
                continue
            if hi is None or hi.const is None or float(hi.const) < self.limit:
                continue
            relu = graph.add_node("Relu", [x], name=node.name + "_relu")
            relu.output.shape, relu.output.dtype = x.shape, x.dtype
            graph.replace_all_uses_with(node.output, relu.output)
            graph.remove(node)
            replaced += 1
        return PassResult(graph, replaced > 0, {"replaced": replaced})


def main() -> compiler.CompiledModel:
    import pathlib

    model = pathlib.Path(__file__).resolve().parents[1] / "models" / "dwsep_tiny.onnx"
    if not model.exists():
        raise SystemExit(f"{model} is missing: run `python scripts/prepare_models.py`")
    # The string form works too: passes=["fold-bn", "clip-to-relu{limit=6}"]
    cm = compiler.compile(model, target="host", passes=["fold-bn", ClipToRelu(limit=6.0)])
    print(cm.pass_stats)
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    print("logits:", cm.run([x])[0].round(3))
    return cm


if __name__ == "__main__":
    main()
