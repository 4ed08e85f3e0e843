"""Folding selection: FINN's SetFolding (incl. two-pass relaxation), the budget search,
user foldings and their divisibility errors, parts and options validation."""
from __future__ import annotations

import json

import pytest

from targets.fpga_sim.cnv import FINN_EXAMPLES_FOLDING, build_cnv_w1a1
from targets.fpga_sim.design import build_design
from targets.fpga_sim.folding import (_one_pass, apply_user_folding, fit_budget, max_cycles,
                                      set_folding, target_cycles_for_fps, totals, unity)
from targets.fpga_sim.mapping import Pipeline, map_graph
from targets.fpga_sim.options import DEFAULT_BUDGET, FpgaOptions, FpgaSimError
from targets.fpga_sim.parts import PARTS, get_part
from targets.fpga_sim.stages import MVAU


@pytest.fixture(scope="module")
def cnv():
    return build_cnv_w1a1()


@pytest.fixture(scope="module")
def pipe(cnv):
    return map_graph(cnv)


def test_setfolding_walks_simd_then_pe_to_first_divisor_below_target():
    p = Pipeline([MVAU("m", mw=8, mh=4, nvec=1, w_bits=1, a_bits=1)], {"m": []})
    # cycles(PE=1): SIMD 1 -> 32, 2 -> 16, 4 -> 8 < 10: stop; PE stays 1
    assert set_folding(p, 10)["m"] == {"PE": 1, "SIMD": 4}
    # target 3: SIMD runs to 8 (4 cycles, not < 3), then PE: 2 -> 2 < 3
    assert set_folding(p, 3)["m"] == {"PE": 2, "SIMD": 8}


def test_setfolding_met_at_unity_changes_nothing(pipe):
    big = max_cycles(pipe, unity(pipe)) + 1
    assert set_folding(pipe, big) == unity(pipe)


def test_setfolding_caps_simd_by_weight_stream_width():
    p = Pipeline([MVAU("m", mw=64, mh=4, nvec=1, w_bits=8, a_bits=8)], {"m": []})
    f = set_folding(p, 1, mvau_wwidth_max=36)["m"]
    assert f["SIMD"] * 8 <= 36 and f["SIMD"] == 4     # 8 would be 64 bits > 36: reverted
    assert set_folding(p, 1, mvau_wwidth_max=10000)["m"]["SIMD"] == 64


def test_two_pass_relaxation_reruns_with_achieved_max_cycles(pipe):
    one = _one_pass(pipe, 1, 36)                      # unreachable target: everything maxed
    achieved = max_cycles(pipe, one)
    assert achieved > 1
    two = set_folding(pipe, 1)
    assert two == _one_pass(pipe, achieved, 36)
    assert max_cycles(pipe, two) <= achieved         # same throughput bound ...
    assert totals(pipe, two)["LUT"] < totals(pipe, one)["LUT"]   # ... for fewer LUTs
    assert set_folding(pipe, 1, two_pass_relaxation=False) == one


def test_target_fps_mode_reaches_the_target(cnv):
    d = build_design(cnv, FpgaOptions(target_fps=3000, part="xczu7ev"))
    assert target_cycles_for_fps(100, 3000) == 33333
    assert d.ii_cycles < 33333 and d.fps > 3000
    assert "SetFolding" in d.folding_mode


def test_budget_search_fastest_fit_and_binding_resource(pipe):
    # a small custom device: LUT binds
    part = get_part({"name": "tiny", "LUT": 40000, "BRAM_18K": 1000, "DSP": 0})
    r = fit_budget(pipe, part, DEFAULT_BUDGET)
    used = totals(pipe, r.folding)
    assert used["LUT"] <= 0.7 * 40000
    assert r.binding_resource == "LUT"
    # a faster SetFolding (one cycle lower target) needs more LUTs than allowed
    faster = set_folding(pipe, r.target_cycles - 1)
    assert max_cycles(pipe, faster) < max_cycles(pipe, r.folding)
    assert totals(pipe, faster)["LUT"] > 0.7 * 40000


def test_budget_search_on_big_part_is_at_least_as_fast(pipe):
    small = fit_budget(pipe, get_part("xc7z020"), DEFAULT_BUDGET)
    big = fit_budget(pipe, get_part("xcu250"), DEFAULT_BUDGET)
    assert max_cycles(pipe, big.folding) <= max_cycles(pipe, small.folding)


def test_fits_no_folding_is_an_error(cnv):
    with pytest.raises(FpgaSimError, match="fits no folding.*BRAM_18K"):
        build_design(cnv, FpgaOptions(part={"LUT": 1e6, "BRAM_18K": 10}))


def test_user_folding_by_finn_names_and_json_file(pipe, tmp_path):
    f = apply_user_folding(pipe, FINN_EXAMPLES_FOLDING)
    assert f["conv1"] == {"PE": 32, "SIMD": 32} and f["conv0/swg"]["SIMD"] == 3
    path = tmp_path / "fold.json"
    path.write_text(json.dumps({"Defaults": {}, "conv0": {"PE": 8, "SIMD": 27,
                                                          "ram_style": "auto"}}))
    f2 = apply_user_folding(pipe, str(path))
    assert f2["conv0"] == {"PE": 8, "SIMD": 27} and f2["conv1"] == {"PE": 1, "SIMD": 1}


def test_divisibility_violation_names_layer_mh_mw_pe_simd(pipe):
    with pytest.raises(FpgaSimError, match=r"conv1.*MH=64 % PE=3.*MW=576 % SIMD=32"):
        apply_user_folding(pipe, {"conv1": {"PE": 3, "SIMD": 32}})
    with pytest.raises(FpgaSimError, match=r"conv1/swg.*SIMD=5 must divide channels=64"):
        apply_user_folding(pipe, {"conv1/swg": {"SIMD": 5}})
    with pytest.raises(FpgaSimError, match="names no hardware stage"):
        apply_user_folding(pipe, {"nope": {"PE": 1}})
    with pytest.raises(FpgaSimError, match="no PE attribute"):
        apply_user_folding(pipe, {"conv1/swg": {"PE": 2}})


def test_unknown_part_lists_known_ones():
    with pytest.raises(FpgaSimError, match="xc7z020.*xczu7ev"):
        get_part("xc9999")
    with pytest.raises(FpgaSimError, match="unknown part"):
        FpgaOptions(part="virtex2")
    assert get_part("ZCU104").name == "xczu7ev" and set(PARTS) >= {"xc7z020", "xczu3eg", "xcu250"}


@pytest.mark.parametrize("bad, msg", [
    ({"fclk": 100}, "unknown fpga-sim option.*allowed: part, fclk_mhz"),
    ({"res_type": "auto"}, "res_type.*allowed: lut, dsp"),
    ({"fclk_mhz": "-5"}, "fclk_mhz.*positive"),
    ({"budget": "lut:1.5"}, r"budget.*\(0, 1\]"),
    ({"budget": "luts=0.5,foo:0.1"}, "unknown resource 'foo'"),
    ({"sparse_skip": "maybe"}, "sparse_skip.*boolean"),
    ({"folding": "/no/such.json"}, "folding.*not a file"),
    ({"folding": {"conv0": {"PE": 0}}}, "positive int"),
    ({"part": {"LUT": 100}}, "needs at least LUT and BRAM_18K"),
])
def test_bad_options_are_named(bad, msg):
    with pytest.raises(FpgaSimError, match=msg):
        FpgaOptions.from_mapping(bad)


def test_options_from_cli_strings_and_replace():
    o = FpgaOptions.from_mapping({"fclk_mhz": "150", "budget": "lut:0.5,bram:0.6",
                                  "sparse_skip": "true", "target_fps": "none", "part": "ultra96"})
    assert o.fclk_mhz == 150.0 and o.budget["LUT"] == 0.5 and o.budget["BRAM_18K"] == 0.6
    assert o.budget["DSP"] == 0.8 and o.sparse_skip is True and o.target_fps is None
    assert o.part == "xczu3eg"
    o2 = o.replace(res_type="dsp")
    assert o2.res_type == "dsp" and o.res_type == "lut" and o2.fclk_mhz == 150.0


def test_chosen_folding_round_trips_as_user_and_finn_folding(cnv, tmp_path):
    d = build_design(cnv, FpgaOptions(part="xc7z020"))
    again = build_design(cnv, FpgaOptions(part="xc7z020", folding=d.folding))
    assert again.folding == d.folding and again.ii_cycles == d.ii_cycles
    path = tmp_path / "auto_folding_config.json"
    path.write_text(json.dumps(d.finn_folding()))
    via_json = build_design(cnv, FpgaOptions(part="xc7z020", folding=str(path)))
    assert via_json.folding == d.folding and via_json.totals == d.totals
