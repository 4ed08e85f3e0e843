"""Quantization: calibration, the ``quantize`` pass (float graph -> integer ops), the
theoretical cost model, the mixed-precision search and import of already-quantized ONNX.

    compiler.compile(model, passes=["quantize{bits=8,act_bits=8,calibration=minmax}"],
                     ctx=PassContext(calibration_data=[{"input": x}, ...]))
"""
from . import calibration, cost, from_qdq, quantize, search  # noqa: F401  (register passes)
from .calibration import CalibrationError, collect_stats  # noqa: F401
from .cost import cost_table, theoretical_speedup  # noqa: F401
from .quantize import Quantize, QuantizationWarning  # noqa: F401
