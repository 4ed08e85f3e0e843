"""Target options as text: ``--target "cortex-a72 -mattr=+neon,+crc -num-cores=2"`` and
``--target-option KEY=VALUE``, applied to a registered target, and recorded so that a
saved model loads back onto the same configured target (``meta.json`` ``target_options``).

A target with a ``configure(**options)`` method (fpga-sim) parses its own options.  A TVM
target (one with a ``tvm_target`` dict factory) takes LLVM target attributes (``mcpu``,
``mattr``, ``mtriple``, ``num-cores``, ...: `LLVM_KEYS`, merged over its dict) and its own
string settings (``layout``, ``memory``).  Nothing here imports TVM or a target module:
targets are handled through those two methods only.
"""
from __future__ import annotations

import dataclasses
import shlex
from typing import Any, Mapping

__all__ = ["TargetOptionError", "parse_target_spec", "configure_target", "target_options",
           "option_text",
           "LLVM_KEYS"]

#: Attributes of TVM's ``llvm`` target kind that a user may set (lists: comma-separated).
LLVM_KEYS = {"mcpu": str, "mattr": list, "mtriple": str, "mabi": str, "mfloat-abi": str,
             "num-cores": int, "opt-level": int, "vector-width": int, "model": str,
             "fast-math": bool, "cl-opt": list, "libs": list, "keys": list}
#: Settings of the TVM target itself (targets/tvm_target.py) that options may set.
TVM_TARGET_FIELDS = ("layout", "memory")
_ATTR = "target_options"  # where a configured target keeps its options (text form)


class TargetOptionError(ValueError):
    """A target option that is malformed or that the target does not take."""


def parse_target_spec(text: str) -> tuple[str, dict[str, str]]:
    """``"cortex-a72 -mattr=+neon -mcpu=cortex-a72"`` -> ``("cortex-a72", {...})``.
    Options are ``-key=value`` (TVM's form) or ``key=value``."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise TargetOptionError(f"--target '{text}': {exc}") from None
    if not words:
        raise TargetOptionError("--target is empty; give a target name (see `compiler targets`)")
    name, options = words[0], {}
    for word in words[1:]:
        key, sep, value = word.lstrip("-").partition("=")
        if not sep or not key:
            raise TargetOptionError(f"--target '{text}': option '{word}' is not -key=value "
                                    "(e.g. -mattr=+neon)")
        if key in options:
            raise TargetOptionError(f"--target '{text}': option '{key}' given twice")
        options[key] = value
    return name, options


def _llvm_value(key: str, raw: str) -> Any:
    kind = LLVM_KEYS[key]
    if kind is list:
        return [v for v in raw.split(",") if v]
    if kind is int:
        try:
            return int(raw)
        except ValueError:
            raise TargetOptionError(f"target option {key}={raw!r} must be an integer") from None
    if kind is bool:
        return raw.lower() in ("1", "true", "yes", "on")
    return raw


def option_text(value: Any) -> str:
    """A TOML/JSON value as option text (lists comma-joined, booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(option_text(v) for v in value)
    return str(value)


def configure_target(target: Any, options: Mapping[str, Any]) -> Any:
    """A copy of ``target`` with ``options`` (text values) applied and recorded in its
    ``target_options`` attribute (see `target_options`)."""
    if not isinstance(options or {}, Mapping):
        raise TargetOptionError(f"target options must be a mapping of key -> value, got "
                                f"{type(options).__name__}")
    options = {str(k): option_text(v) for k, v in (options or {}).items()}
    if not options:
        return target
    if hasattr(target, "configure"):
        new = target.configure(**options)
    elif hasattr(target, "tvm_target") and dataclasses.is_dataclass(target):
        fields = {f.name for f in dataclasses.fields(target)} & set(TVM_TARGET_FIELDS)
        own = {k: v for k, v in options.items() if k in fields}
        llvm = {k: v for k, v in options.items() if k not in own}
        unknown = sorted(set(llvm) - set(LLVM_KEYS))
        if unknown:
            settable = sorted(set(LLVM_KEYS) | fields)
            raise TargetOptionError(f"target '{target.name}' has no option "
                                    f"{', '.join(repr(k) for k in unknown)}; its options: "
                                    f"{', '.join(settable)}")
        base = target.tvm_target
        extra = {k: _llvm_value(k, v) for k, v in llvm.items()}

        def merged() -> dict[str, Any]:
            return {**base(), **extra}

        new = dataclasses.replace(target, tvm_target=merged) if extra else \
            dataclasses.replace(target)
        for key, value in own.items():  # through the target's checked setter (with_memory)
            setter = getattr(new, f"with_{key}", None)
            try:
                new = setter(value) if setter else dataclasses.replace(new, **{key: value})
            except ValueError as exc:
                raise TargetOptionError(f"target '{target.name}' option {key}={value!r}: "
                                        f"{exc}") from None
    else:
        raise TargetOptionError(f"target '{getattr(target, 'name', target)}' takes no options")
    recorded = dict(getattr(target, _ATTR, None) or {})
    recorded.update(options)
    setattr(new, _ATTR, recorded)
    return new


def target_options(target: Any) -> dict[str, str] | None:
    """The text options a target was configured with (None: a registered default)."""
    return dict(getattr(target, _ATTR)) if getattr(target, _ATTR, None) else None
