"""TVM (Relax) backend: `lower_graph` builds a Relax IRModule, `build`/`run` compile and execute it."""
from .lowering import LOWERINGS, LowerContext, LoweringError, lower_graph, register_lowering
from .build import build, export_library, host_target, load_library, run

__all__ = ["LOWERINGS", "LowerContext", "LoweringError", "lower_graph", "register_lowering",
           "build", "run", "export_library", "load_library", "host_target"]
