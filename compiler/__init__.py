"""A compiler that makes trained CNNs (ONNX) small and fast on embedded hardware.

    import compiler
    cm = compiler.compile("model.onnx", target="host", passes=["fold-bn"])
    outputs = cm.run({"input": x})
    print(cm.report())
"""
from .api import compile, optimize
from .artifact import CompiledModel, Report
from .interpreter import Interpreter, InputError
from .ir import Graph, IRError, Node, QuantParams, Value
from .onnx_io import ModelImportError, export_model, import_model
from .verify import VerificationError
from .ops.registry import OpValidationError, UnsupportedOpError, register_op
from .pass_manager import (Pass, PassContext, PassOptionError, PassResult, Sequential, parse_pass,
                     register_pass)

__all__ = ["compile", "optimize", "CompiledModel", "Report", "Interpreter", "InputError", "Graph",
           "Node", "Value", "QuantParams", "IRError", "import_model", "export_model",
           "ModelImportError", "UnsupportedOpError", "OpValidationError", "register_op", "Pass",
           "PassContext", "PassResult", "PassOptionError", "Sequential", "parse_pass",
           "register_pass", "VerificationError"]
__version__ = "0.1.0"
