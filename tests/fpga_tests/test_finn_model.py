"""FINN formula identities on CNV-W1A1 with finn-examples' folding.

Expected per-layer numbers are FINN's own (notes/fpga-sim.md, "Checks worth having"):
cycles equal BNN-PYNQ's config.h 'Ext Latency' comments; weight BRAM18 and HLS LUT are
what FINN's MVAU estimators give for this folding.  Our model reproduces them from the
graph, not from a table."""
from __future__ import annotations

import pytest

from targets.fpga_sim.cnv import FINN_EXAMPLES_FOLDING, build_cnv_w1a1
from targets.fpga_sim.design import design_from_pipeline
from targets.fpga_sim.folding import apply_user_folding
from targets.fpga_sim.mapping import map_graph
from targets.fpga_sim.options import FpgaOptions
from targets.fpga_sim.parts import get_part
from targets.fpga_sim.stages import MVAU, SWG, acc_bits_bound, bram_ladder

FINN_CYCLES = [32400, 28224, 20736, 28800, 20736, 18432, 32768, 32768, 1024]
FINN_BRAM18 = [2, 29, 15, 15, 24, 36, 8, 16, 1]
FINN_LUT = [2764, 7375, 3837, 3855, 1188, 523, 335, 362, 382]


@pytest.fixture(scope="module")
def design():
    pipeline = map_graph(build_cnv_w1a1())
    folding = apply_user_folding(pipeline, FINN_EXAMPLES_FOLDING)
    return design_from_pipeline(pipeline, folding, get_part("xc7z020"), FpgaOptions(), "user")


def _mvaus(design):
    return [l for l in design.layers if l.unit == "MVAU"]


def test_cnv_maps_to_nine_mvaus_and_six_swgs(design):
    units = [l.unit for l in design.layers]
    assert units.count("MVAU") == 9 and units.count("SWG") == 6
    assert units.count("StreamingMaxPool") == 2 and units[0] == units[-1] == "IODMA"
    # MW = K*K*Cin, MH = Cout, binary weights
    mv = _mvaus(design)
    assert [(l.MW, l.MH) for l in mv[:3]] == [(27, 64), (576, 64), (576, 128)]
    assert all(l.weight_bits == 1 for l in mv)


def test_cnv_per_layer_cycles_match_finn(design):
    assert [l.cycles for l in _mvaus(design)] == FINN_CYCLES


def test_cnv_weight_bram18_matches_finn(design):
    assert [l.bram_weights for l in _mvaus(design)] == FINN_BRAM18


def test_cnv_hls_lut_matches_finn(design):
    assert [l.LUT for l in _mvaus(design)] == FINN_LUT


def test_cnv_ii_fps_and_latency(design):
    # II = max layer cycles (fc0/fc1 at 32768), FPS = fclk / II; latency = sum along the chain
    assert design.ii_cycles == 32768
    assert design.fps == pytest.approx(100e6 / 32768)
    assert design.latency_cycles == sum(l.cycles for l in design.layers)
    assert design.batch_latency_s(10) == pytest.approx(
        (design.latency_cycles + 9 * 32768) / 100e6)
    assert design.bottleneck in ("fc0", "fc1")
    assert design.fits


def test_bram_ladder_branches_and_acc_bound():
    # each width branch of FINN's RAMB18 ladder
    assert bram_ladder(20000, 1) == 2 and bram_ladder(9000, 2) == 2
    assert bram_ladder(5000, 3) == 2 and bram_ladder(3000, 8) == 2
    assert bram_ladder(600, 10) == 1 and bram_ladder(100, 40) == 2
    # first CNV layer: 8-bit unsigned input, binary weights, MW=27 -> 14 bits
    assert acc_bits_bound(27, 1, 8, False) == 14
    assert acc_bits_bound(576, 1, 1, True) == 11


def test_swg_cycles_formula():
    swg = SWG("s", ch=3, ifm=(32, 32), ofm=(30, 30), kernel=(3, 3))
    # IFM_w*k_h*C/SIMD + OFM_h*max(OFM_w*k*k*C/SIMD, stride*IFM_w*C/SIMD)
    assert swg.cycles(1, 3) == 32 * 3 + 30 * max(30 * 9, 32)
    assert swg.cycles(1, 1) == 32 * 3 * 3 + 30 * max(30 * 9 * 3, 32 * 3)


def test_sparse_skip_counts_only_nonzero_simd_blocks():
    import numpy as np
    nz = np.ones((4, 8), bool)
    nz[0:2, 4:] = False            # rows 0,1 have one zero block of 4 at SIMD=4
    dense = MVAU("m", mw=8, mh=4, nvec=10, w_bits=4, a_bits=4, nonzero=nz)
    sparse = MVAU("m", mw=8, mh=4, nvec=10, w_bits=4, a_bits=4, nonzero=nz, sparse_skip=True)
    assert dense.cycles(1, 4) == 4 * 2 * 10
    assert sparse.cycles(1, 4) == (1 + 1 + 2 + 2) * 10
    # with PE=2 a group waits for its slowest row: groups (0,1) -> 1, (2,3) -> 2
    assert sparse.cycles(2, 4) == (1 + 2) * 10


def test_design_report_is_json_safe_and_labelled_simulated(design):
    import json
    d = json.loads(json.dumps(design.to_dict()))
    assert d["timing"] == "SIMULATED" and d["ii_cycles"] == 32768
    assert d["totals"]["LUT"] == sum(l["LUT"] for l in d["layers"])
    assert d["utilization_pct"]["LUT"] == round(100 * d["totals"]["LUT"] / 53200, 2)
    text = design.table()
    assert "SIMULATED" in text and "TOTAL" in text and "bottleneck: fc0" in text


def test_vvau_lut_formula_by_hand():
    from targets.fpga_sim.stages import VVAU
    v = VVAU("dw", ch=32, k=9, nvec=196, w_bits=4, a_bits=4, a_signed=False, out_bits=4)
    # acc: alpha = log2(9) + 4 + 4 - 1 - 0 = 10.17 -> 12 bits
    assert v.acc_bits == 12
    P, Q = 4, 3
    mult = Q * (2 * 2 - 1) * 8
    adder = 8 * (2 * Q - 1)
    thr, comp = 15 * 12 * (32 / P) / 64, 15 * 12
    wmem = 9 * 32 // P // Q                                   # 24 <= 128: LUTRAM weights
    c2 = P * Q * 4 * 1
    assert v.resources(P, Q)["LUT"] == int(300 + 1.1 * P * (mult + adder + 12 + thr + comp) + c2)
    assert v.resources(P, Q)["BRAM_18K"] == 0 and wmem == 24
    assert v.cycles(P, Q) == 32 * 9 // (P * Q) * 196


def test_res_type_dsp_moves_multipliers_from_luts_to_dsps():
    pipeline = map_graph(build_cnv_w1a1())
    folding = apply_user_folding(pipeline, FINN_EXAMPLES_FOLDING)
    part = get_part("xc7z020")
    lut = design_from_pipeline(pipeline, folding, part, FpgaOptions(), "user")
    dsp = design_from_pipeline(pipeline, folding, part, FpgaOptions(res_type="dsp"), "user")
    assert lut.totals["DSP"] == 0
    # FINN HLS: P*Q*ceil((W+A)/48) DSPs per MVAU, multiplier LUTs dropped
    assert dsp.totals["DSP"] == sum(l.PE * l.SIMD for l in dsp.layers if l.unit == "MVAU")
    assert dsp.totals["LUT"] < lut.totals["LUT"]
