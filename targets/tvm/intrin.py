"""Fixes to TVM 0.27's registered tensor intrinsics for the LLVM it ships with, and one
intrinsic it lacks.

``dot_16x4_vnni`` (x86 ``vpdpbusd``, u8 x s8 -> s32; what MetaSchedule's x86 rules use
to tensorize int8 convs) is written for LLVM < 20, where the intrinsic took its byte
operands as ``<16 x i32>``.  From LLVM 20 on (this wheel links LLVM 22) they are
``<64 x i8>``, so every tensorized candidate failed LLVM's module verification ("Call
parameter type does not match function signature").  `fix_x86_vnni` re-registers the
intrinsic under the same name with the byte operands as ``int8x64``; same semantics.

``dot_8x4_vnni`` (`VNNI_DOT_8x4`) is the 256-bit form of the same instruction (AVX512-VL):
8 output channels x 4 inputs, for int8 convs whose output channels are a multiple of 8
but not of 16 (MobileNetV2's 24-channel projections), which `layout.py` packs 8 wide.

``dot_16x4_vnni_i8x64`` (`VNNI_DOT_16x4`) is ``dot_16x4_vnni`` as `fix_x86_vnni` registers
it, under a name of ours: `register_vnni_dots` registers it and ``dot_8x4_vnni`` without
importing ``tvm.s_tir.tensor_intrin`` (60-90 s: hundreds of ``@T.prim_func`` parses), for
the default schedule (`default_schedule.py`), which tensorizes u8 x s8 convs in every
build, tuned or not.
"""
from __future__ import annotations

import tvm

__all__ = ["fix_x86_vnni", "register_vnni_dots", "VNNI_DOT_8x4", "VNNI_DOT_16x4"]

VNNI_DOT_8x4 = "dot_8x4_vnni"
VNNI_DOT_16x4 = "dot_16x4_vnni_i8x64"

_DONE = False
_DOTS: dict[int, str] | None = None


def _vnni_desc(T, lanes: int):
    """``C[lanes] += A[4] (u8) . B[lanes, 4] (s8)``, the semantics of one ``vpdpbusd``."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vnni_impl(T, lanes: int):
    """``vpdpbusd`` on ``lanes`` int32 accumulators (16: 512-bit, 8: 256-bit), byte
    operands as ``int8 x 4*lanes`` (LLVM >= 20's signature)."""
    bytes_ = f"int8x{4 * lanes}"
    acc = f"int32x{lanes}"
    llvm_name = f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((lanes, 4), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            A_u8x4 = A.vload([0], "uint8x4")
            A_i32 = T.reinterpret(A_u8x4, dtype="int32")
            A_bytes = T.reinterpret(T.broadcast(A_i32, lanes), dtype=bytes_)
            B_bytes = B.vload([0, 0], dtype=bytes_)
            C_acc = C.vload([0], dtype=acc)
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_name), C_acc, A_bytes, B_bytes, dtype=acc)

    return impl


def fix_x86_vnni() -> bool:
    """Re-register ``dot_16x4_vnni`` for LLVM >= 20 and register ``dot_8x4_vnni`` (written
    for LLVM >= 20's operand types only); idempotent; True if done."""
    global _DONE
    if _DONE:
        return True
    if tvm.target.codegen.llvm_version_major() < 20:
        return False
    from tvm.s_tir import TensorIntrin
    from tvm.s_tir.tensor_intrin.x86 import VNNI_DOT_16x4_INTRIN, dot_product_16x4_u8i8i32_desc
    from tvm.script import tirx as T

    TensorIntrin.register(VNNI_DOT_16x4_INTRIN, dot_product_16x4_u8i8i32_desc,
                          _vnni_impl(T, 16), override=True)
    register_vnni_dots()
    _DONE = True
    return True


def register_vnni_dots() -> dict[int, str]:
    """Register ``vpdpbusd`` on 16 and 8 int32 lanes (`VNNI_DOT_16x4`, `VNNI_DOT_8x4`;
    semantics `_vnni_desc`) without TVM's intrinsic library; idempotent.  Returns the
    registered names by lanes, ``{}`` before LLVM 20 (the operand types differ)."""
    global _DOTS
    if _DOTS is not None:
        return _DOTS
    if tvm.target.codegen.llvm_version_major() < 20:
        _DOTS = {}
        return _DOTS
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    _DOTS = {}
    for lanes, name in ((16, VNNI_DOT_16x4), (8, VNNI_DOT_8x4)):
        TensorIntrin.register(name, _vnni_desc(T, lanes), _vnni_impl(T, lanes), override=True)
        _DOTS[lanes] = name
    return _DOTS
