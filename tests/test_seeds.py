"""benchmarks/seeds.py without training: claim verdicts and the SEEDS.md table."""
import importlib.util
import sys

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("seeds", ROOT / "benchmarks" / "seeds.py")
seeds = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("seeds", seeds)  # dataclasses look their module up
_spec.loader.exec_module(seeds)


def test_every_claim_has_a_row_function_and_the_other_way_round():
    assert [c.key for c in seeds.CLAIMS] == list(seeds.ROWS)


@pytest.mark.parametrize("measured, expected", [
    ({"ratio": 400.0, "drop_pt": 0.4}, "**yes**"),
    ({"ratio": 385.0, "drop_pt": 0.5}, "**yes**"),          # bounds are inclusive
    ({"ratio": 120.0, "drop_pt": 0.4}, "no: ratio 120 not >= 385"),
    ({"ratio": 400.0, "drop_pt": 0.6}, "no: drop_pt 0.6 not <= 0.5"),
    ({"ratio": 400.0}, "not measured (drop_pt)"),
    (None, "not measured (ratio, drop_pt)"),
])
def test_verdict_compares_every_condition(measured, expected):
    assert seeds.verdict(seeds.CLAIM["lenet385"], measured) == expected


def test_board_claims_need_a_real_board_and_static_rows_have_no_verdict():
    a72 = seeds.CLAIM["int8_a72"]
    assert seeds.verdict(a72, {"a72_speedup": 9.0}).startswith("cannot say")
    assert seeds.verdict(a72, {"a72_speedup": 9.0}, real_board=True) == "**yes**"
    assert seeds.verdict(a72, {"a72_speedup": 2.0}, real_board=True).startswith("no:")
    assert seeds.verdict(seeds.CLAIM["deeplab"], {}) == "n/a"


def test_render_puts_rows_in_claim_order_and_marks_missing_ones(tmp_path):
    rows = {"mixed": seeds.Row("mixed", "x52.5, drop 2.1 pt | pipe", "lenet5_mnist", "cmd a",
                               {"speedup": 52.5, "f1_drop_pt": 2.1}, ["a note"], "--quick",
                               "2026-12-02 19:00 UTC", 12.0),
            "q5": seeds.Row("q5", "worst drop 1.5 pt", "baselines", "cmd b",
                            {"max_drop_pt": 1.5})}
    text = seeds.render(rows, {"mode": "--quick", "date": "today", "machine": "m"})
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(seeds.CLAIMS)
    body = table[1:]
    assert body[0].startswith("| 1 |") and "worst drop 1.5 pt" in body[0]
    assert "no: max_drop_pt 1.5 not <= 1" in body[0]
    mixed = next(line for line in body if "IMVIP" in line)
    assert "**yes**" in mixed and "pipe" in mixed and "\\|" in mixed  # pipes escaped
    assert all("not run" in line for line in body if "Lund" in line or "CRV" in line)
    assert "a note" in text and "2026-12-02 19:00 UTC, --quick, 12 s" in text
    # round trip through the JSON the script writes
    import dataclasses
    import json

    path = tmp_path / "seeds.json"
    path.write_text(json.dumps({"rows": {k: dataclasses.asdict(v) for k, v in rows.items()}}))
    assert seeds.render(seeds.load_rows(path), {}) == seeds.render(rows, {})
