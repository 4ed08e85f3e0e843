"""The tutorials are executed, so they cannot rot."""
import runpy
from pathlib import Path

import numpy as np


def test_custom_pass_tutorial_runs_and_rewrites():
    ns = runpy.run_path(str(Path(__file__).with_name("custom_pass.py")))
    cm = ns["main"]()
    assert cm.pass_stats["clip-to-relu"]["replaced"] > 0
    assert not cm.graph.find("Clip")
    assert len(cm.graph.find("Relu")) == cm.pass_stats["clip-to-relu"]["replaced"]
    # the string form names the same registered pass
    from compiler.pass_manager import parse_pass

    assert type(parse_pass("clip-to-relu{limit=6}")).__name__ == "ClipToRelu"
