"""Pass infrastructure: `Pass`, `PassContext`, `Sequential`, instruments and a registry.

A pass is a dataclass whose fields are its options, so that the string form
``"prune{ratio=0.5,criterion=l1}"`` and the object form ``Prune(ratio=0.5,
criterion="l1")`` are one and the same thing (`parse_pass` builds the latter from the
former with type checking).  ``run(graph, ctx)`` returns a `PassResult` saying whether
anything changed and with what statistics; instruments (verify, numerics, timing,
printing) wrap every pass the way TVM's ``PassContext(instruments=...)`` does.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging
import re
import time
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Sequence

import numpy as np

from .ir import Graph

__all__ = ["Pass", "PassResult", "PassContext", "PassInstrument", "Sequential", "register_pass",
           "with_requirements", "PassDataError", "DEFAULT_MAX_DROP", "check_budget",
           "get_pass", "parse_pass", "parse_pipeline", "registered_passes", "PassOptionError",
           "VerifyInstrument", "NumericsInstrument", "TimingInstrument", "PrintIRInstrument"]

log = logging.getLogger("compiler.passes")


class PassOptionError(ValueError):
    """An unknown pass name, an unknown option or an option value of the wrong type."""


class PassDataError(PassOptionError):
    """What a pass needs from its `PassContext` (calibration data, an evaluation callback)
    is missing or does not fit the model: a user error, reported as one line."""


#: The accuracy drop an accuracy-aware pass allows when neither its own option nor a
#: pipeline budget (``PassContext.budget``) says otherwise.
DEFAULT_MAX_DROP = 0.01


@dataclass
class PassResult:
    graph: Graph
    modified: bool
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassContext:
    """What passes may need beyond the graph.

    ``calibration_data``: a list of input dicts (name -> array) drawn from real data.
    ``evaluate``: a callback ``graph -> float`` (e.g. accuracy on a held-out split) for
    accuracy-aware passes.  ``measure_latency``: a callback ``graph -> ms`` for
    latency-aware passes (`compiler.optimize` sets one that builds for
    ``options["target"]``, default host), so passes never call the compiler themselves.
    ``instruments`` run around every pass.

    ``budget``: one accuracy budget for the whole pipeline -- the largest drop of
    ``evaluate``'s score, against the model as it entered the pipeline (``baseline``,
    measured once by `start_budget`), that all accuracy-aware passes together may cost.
    Each such pass asks `allowed_drop` how much it may still spend (what earlier passes
    left), so two passes given 1 % each no longer lose 2 % between them.  ``spent``
    logs ``(pass, score after it)`` for the passes that drew on the budget.
    """

    calibration_data: list[dict[str, np.ndarray]] | None = None
    evaluate: Callable[[Graph], float] | None = None
    measure_latency: Callable[[Graph], float] | None = None
    instruments: list["PassInstrument"] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: log)
    history: list[tuple[str, PassResult]] = field(default_factory=list)
    budget: float | None = None
    baseline: float | None = None
    spent: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.budget = check_budget(self.budget)

    def start_budget(self, graph: Graph) -> float | None:
        """Measure ``baseline`` on ``graph`` (the pipeline's input) if a budget is set and
        it is not known yet, and return it (None when nothing was measured).
        `compiler.optimize` calls it on the original model before the first pass; a pass
        called on its own calls it on its input."""
        if self.budget is None or self.baseline is not None:
            return None
        if self.evaluate is None:
            raise PassDataError("an accuracy budget needs evaluation data: give "
                                "--eval-data (CLI) or evaluate=/eval_data= (API)")
        self.baseline = float(self.evaluate(graph))
        return self.baseline

    def train_data(self, who: str) -> Any:
        """The labelled training set in ``options["train_data"]`` (a `Dataset` or
        `data_sources.Samples`), or `PassDataError` telling ``who`` (the pass, and why it
        trains) how to give it -- one wording for every fine-tuning pass."""
        data = self.options.get("train_data")
        if data is None:
            raise PassDataError(f"{who} needs labelled training data: give --train-data "
                                "(CLI) or train_data= (compiler.compile), or set "
                                "PassContext.options['train_data']")
        return data

    def allowed_drop(self, base: float, own: float | None) -> float:
        """How far below ``base`` (the score the calling pass starts from) its result may
        score.  Without a pipeline budget: the pass's own option ``own`` (or
        `DEFAULT_MAX_DROP` when that is None).  With one: what remains of it,
        ``base - (baseline - budget)``, never below 0 (a pass never makes an overspent
        pipeline worse), and at most ``own`` when the pass was given one."""
        if self.budget is None:
            return float(DEFAULT_MAX_DROP if own is None else own)
        if self.baseline is None:
            self.baseline = float(base)
        remaining = max(0.0, float(base) - (self.baseline - float(self.budget)))
        return remaining if own is None else min(float(own), remaining)

    def record_spent(self, pass_name: str, score: float) -> dict[str, float]:
        """Note the score after an accuracy-aware pass; returns stats for its result
        (``budget``, ``pipeline_baseline``, ``budget_left``) when a pipeline budget is set."""
        if self.budget is None or self.baseline is None:
            return {}
        self.spent.append((pass_name, float(score)))
        left = float(self.budget) - (self.baseline - float(score))
        if left < -1e-9:
            self.logger.warning("accuracy budget overspent after '%s': score %.5f is %.5f "
                                "below the original %.5f (budget %.5f)", pass_name, score,
                                self.baseline - score, self.baseline, self.budget)
        return {"budget": float(self.budget), "pipeline_baseline": round(self.baseline, 5),
                "budget_left": round(left, 5) + 0.0}


def check_budget(budget: Any) -> float | None:
    """An accuracy budget as a float >= 0 (None stays None), else `PassOptionError`."""
    if budget is None:
        return None
    try:
        value = float(budget)
    except (TypeError, ValueError):
        value = float("nan")
    if not value >= 0:
        raise PassOptionError(f"accuracy budget {budget!r} must be a number >= 0 (a drop of "
                              "the score, e.g. 0.01 for one point of top-1)")
    return value


class PassInstrument:
    """Hooks around each pass (override what you need)."""

    def before_pass(self, p: "Pass", graph: Graph, ctx: PassContext) -> None:  # noqa: D401
        pass

    def after_pass(self, p: "Pass", result: PassResult, ctx: PassContext) -> None:
        pass


_REGISTRY: dict[str, type["Pass"]] = {}


def register_pass(name: str) -> Callable[[type["Pass"]], type["Pass"]]:
    """Class decorator: makes ``name`` (and ``name{opt=...}``) resolve to the class."""

    def decorate(cls: type[Pass]) -> type[Pass]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"pass '{name}' is registered twice")
        if not dataclasses.is_dataclass(cls):
            cls = dataclass(cls)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


class Pass:
    """Base class of every graph rewrite.

    Subclasses are dataclasses (their fields are the options), set ``name`` through
    `register_pass`, and implement `run`.  ``exact`` says the rewrite preserves the
    model's outputs up to float rounding (the numerics instrument checks it).
    ``requires`` names passes that must have run first (e.g. ``("fold-bn",)``): a
    `Sequential` inserts each one that is not already earlier in it, and a pass called on
    its own runs them first, so instruments and ``ctx.history`` see every rewrite.
    """

    name: ClassVar[str] = "<unnamed>"
    exact: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    #: The pass spends the pipeline's accuracy budget (`PassContext.allowed_drop`), so
    #: `compiler.optimize` measures the original model's score before the pipeline runs.
    uses_budget: ClassVar[bool] = False

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        raise NotImplementedError(f"pass {type(self).__name__} does not implement run()")

    def __call__(self, graph: Graph, ctx: PassContext | None = None, *,
                 run_requirements: bool = True) -> PassResult:
        """Run with instruments; first the ``requires`` passes unless ``run_requirements``
        is False (a `Sequential` says so: it has put them earlier in the pipeline)."""
        ctx = ctx or PassContext()
        if run_requirements:
            for req in self.requires:
                graph = get_pass(req)()(graph, ctx).graph
        for instrument in ctx.instruments:
            instrument.before_pass(self, graph, ctx)
        result = self.run(graph, ctx)
        if not isinstance(result, PassResult):
            raise TypeError(f"pass '{self.name}' returned {type(result).__name__}, "
                            "not a PassResult")
        ctx.history.append((self.name, result))
        for instrument in ctx.instruments:
            instrument.after_pass(self, result, ctx)
        return result

    def spec(self) -> str:
        """The string form that `parse_pass` turns back into this pass."""
        if not dataclasses.is_dataclass(self):
            return self.name
        opts = [f"{f.name}={_fmt_option(getattr(self, f.name))}" for f in dataclasses.fields(self)
                if f.init and getattr(self, f.name) != _default_of(f)]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")

    def __str__(self) -> str:
        return self.spec()


@register_pass("sequential")
@dataclass
class Sequential(Pass):
    """Runs passes in order; stats are kept per pass under their names."""

    passes: list[Pass] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.passes = with_requirements(self.passes)

    @property
    def exact(self) -> bool:  # type: ignore[override]
        return all(p.exact for p in self.passes)

    @property
    def uses_budget(self) -> bool:  # type: ignore[override]
        return any(p.uses_budget for p in self.passes)

    def run(self, graph: Graph, ctx: PassContext) -> PassResult:
        modified = False
        stats: dict[str, Any] = {}
        for p in self.passes:
            result = p(graph, ctx, run_requirements=False)
            graph = result.graph
            modified |= result.modified
            key = p.name
            suffix = 1
            while key in stats:
                suffix += 1
                key = f"{p.name}#{suffix}"
            stats[key] = result.stats
        return PassResult(graph, modified, stats)

    def spec(self) -> str:
        return ",".join(p.spec() for p in self.passes)


def _names(passes: Iterable[Pass]) -> set[str]:
    names: set[str] = set()
    for p in passes:
        names.add(p.name)
        if isinstance(p, Sequential):
            names |= _names(p.passes)
    return names


def with_requirements(passes: Iterable[Pass]) -> list[Pass]:
    """``passes`` with each pass's ``requires`` inserted just before it, unless a pass of
    that name is already earlier (requirements of requirements too)."""
    out: list[Pass] = []

    def add(p: Pass, chain: tuple[str, ...]) -> None:
        for req in p.requires:
            if req in chain:
                raise PassOptionError(f"pass '{p.name}': circular requirement "
                                      f"{' -> '.join(chain + (req,))}")
            if req not in _names(out):
                add(get_pass(req)(), chain + (req,))
        out.append(p)

    for p in passes:
        add(p, (p.name,))
    return out


def registered_passes() -> list[str]:
    _load_builtin_passes()
    return sorted(_REGISTRY)


def get_pass(name: str) -> type[Pass]:
    _load_builtin_passes()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PassOptionError(f"unknown pass '{name}'; registered passes: "
                              f"{', '.join(sorted(_REGISTRY))}") from None


_SPEC = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(?:\{(.*)\})?\s*$", re.S)


def parse_pass(spec: "str | Pass") -> Pass:
    """``"prune{ratio=0.5,criterion=l1}"`` -> ``Prune(ratio=0.5, criterion="l1")``."""
    if isinstance(spec, Pass):
        return spec
    if not isinstance(spec, str):
        raise PassOptionError(f"a pass is a name string or a Pass object, not {spec!r}")
    match = _SPEC.match(spec)
    if not match:
        raise PassOptionError(f"cannot parse pass spec '{spec}': expected name or "
                              "name{key=value,...}")
    name, body = match.group(1), match.group(2)
    cls = get_pass(name)
    kwargs: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init} \
        if dataclasses.is_dataclass(cls) else {}
    hints = typing.get_type_hints(cls) if fields else {}
    for item in _split_options(body or ""):
        if "=" not in item:
            raise PassOptionError(f"pass '{name}': option '{item}' has no value (use key=value)")
        key, raw = (part.strip() for part in item.split("=", 1))
        if key not in fields:
            raise PassOptionError(f"pass '{name}' has no option '{key}'; its options: "
                                  f"{', '.join(fields) or '(none)'}")
        if key in kwargs:
            raise PassOptionError(f"pass '{name}': option '{key}' is given twice (give it once)")
        kwargs[key] = _coerce(raw, hints.get(key, str), name, key)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise PassOptionError(f"pass '{name}': {exc}") from None


def parse_pipeline(specs: "str | Pass | Iterable[str | Pass] | None") -> Sequential:
    """A list of pass specs (or one comma-separated string) as one `Sequential`."""
    if specs is None:
        return Sequential([])
    if isinstance(specs, (str, Pass)):
        specs = _split_options(specs) if isinstance(specs, str) else [specs]
    return Sequential([parse_pass(s) for s in specs])


def _split_options(text: str) -> list[str]:
    """Split on commas that are not inside braces or brackets."""
    parts, depth, current = [], 0, []
    for ch in text:
        if ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return [p for p in parts if p]


def _coerce(raw: str, hint: Any, pass_name: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(raw, arg, pass_name, key)
            except PassOptionError as exc:
                errors.append(str(exc))
        raise PassOptionError(errors[0] if errors else f"pass '{pass_name}': bad value for {key}")
    if origin is typing.Literal:
        if raw in [str(a) for a in args]:
            return next(a for a in args if str(a) == raw)
        raise PassOptionError(f"pass '{pass_name}': option {key}={raw!r} must be one of "
                              f"{', '.join(str(a) for a in args)}")
    if origin in (list, tuple) or hint in (list, tuple):
        inner = args[0] if args else str
        body = raw.strip()
        if body.startswith("[") and body.endswith("]"):
            body = body[1:-1]
        return [_coerce(v.strip(), inner, pass_name, key) for v in body.split(";" if ";" in body
                else ",") if v.strip()]
    try:
        if hint is bool:
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is str or hint is Any:
            return raw.strip("'\"")
    except ValueError:
        raise PassOptionError(f"pass '{pass_name}': option {key}={raw!r} is not a valid "
                              f"{getattr(hint, '__name__', hint)}") from None
    return raw


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _fmt_option(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ";".join(_fmt_option(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- instruments ------------------------------------------------------------------

class VerifyInstrument(PassInstrument):
    """Checks the graph's structure and types after every pass (a broken pass fails loudly)."""

    def after_pass(self, p: Pass, result: PassResult, ctx: PassContext) -> None:
        if isinstance(p, Sequential):
            return
        try:
            result.graph.verify(require_types=True)
        except Exception as exc:
            raise AssertionError(f"graph invalid after pass '{p.spec()}': {exc}") from exc


class NumericsInstrument(PassInstrument):
    """Runs the reference interpreter before and after each *exact* pass and compares."""

    def __init__(self, inputs: dict[str, np.ndarray] | None = None, rtol: float = 1e-4,
                 atol: float = 1e-5, seed: int = 0):
        self.inputs = inputs
        self.rtol, self.atol, self.seed = rtol, atol, seed
        self._before: list[np.ndarray] | None = None

    def _run(self, graph: Graph) -> list[np.ndarray]:
        from .interpreter import Interpreter, random_inputs

        if self.inputs is None:
            self.inputs = random_inputs(graph, seed=self.seed)
        return Interpreter(graph).run(self.inputs)

    def before_pass(self, p: Pass, graph: Graph, ctx: PassContext) -> None:
        self._before = self._run(graph) if p.exact and not isinstance(p, Sequential) else None

    def after_pass(self, p: Pass, result: PassResult, ctx: PassContext) -> None:
        if self._before is None:
            return
        after = self._run(result.graph)
        for i, (a, b) in enumerate(zip(self._before, after)):
            if a.shape != b.shape or not np.allclose(a, b, rtol=self.rtol, atol=self.atol):
                err = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("nan")
                raise AssertionError(f"pass '{p.spec()}' changed output {i} "
                                     f"(max abs diff {err:.3g}, shapes {a.shape} vs {b.shape})")


class TimingInstrument(PassInstrument):
    """Records wall time per pass in ``self.times`` (name -> seconds)."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self._start = 0.0

    def before_pass(self, p: Pass, graph: Graph, ctx: PassContext) -> None:
        self._start = time.perf_counter()

    def after_pass(self, p: Pass, result: PassResult, ctx: PassContext) -> None:
        self.times.append((p.spec(), time.perf_counter() - self._start))


class PrintIRInstrument(PassInstrument):
    """Prints the graph after each pass that modified it (like TVM's PrintAfterAll)."""

    def __init__(self, stream: Any = None):
        self.stream = stream

    def after_pass(self, p: Pass, result: PassResult, ctx: PassContext) -> None:
        if result.modified and not isinstance(p, Sequential):
            print(f"// after {p.spec()}\n{result.graph.to_text(show_constants=False)}",
                  file=self.stream)


#: Plug-in modules whose import registers the built-in passes, like entry points: the
#: infrastructure names them and imports them by name at the first registry lookup, so
#: ``compiler`` never imports the code of ``passes`` at module import time (no cycle, no
#: upward import; tests/test_layering.py checks that).
BUILTIN_PASS_MODULES: tuple[str, ...] = ("passes",)

_builtin_loaded = False


def _load_builtin_passes() -> None:
    """Import the plug-in modules in ``BUILTIN_PASS_MODULES``, which register the built-ins."""
    global _builtin_loaded
    if not _builtin_loaded:
        _builtin_loaded = True
        for name in BUILTIN_PASS_MODULES:
            importlib.import_module(name)
