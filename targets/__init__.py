"""Targets: everything that knows about hardware or TVM (TVM itself only under targets/tvm)."""
from .base import (Target, TargetUnavailableError, Timing, TuningUnsupportedError,
                   UnknownTargetError, get_target, register_target, registered_targets,
                   user_error_types)

__all__ = ["Target", "Timing", "get_target", "register_target", "registered_targets",
           "UnknownTargetError", "TargetUnavailableError", "TuningUnsupportedError", "user_error_types"]
