"""The search space: the spec's ``space`` section -> an Optuna define-by-run sampler -> a trial config.

Sampling gives a typed :class:`~segtune.config.TrialConfig`: the drawn values, defaults for the rest.
Each space entry is a fixed value or one of ``choice`` / ``int`` / ``uniform`` / ``loguniform``,
optionally with ``when: {other_param: value-or-list}`` to sample it only under a condition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segtune.config import DEFAULTS, MEDIAN_FREQUENCY, PARAMETERS, TrialConfig
from segtune.errors import SpecError

WHOLE_NUMBERS = ("batch_size", "accum_steps")  # the parameters `int:` may sample
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "cosine", "onecycle")
KINDS = ("choice", "int", "uniform", "loguniform", "value")


@dataclass
class Param:
    name: str
    kind: str  # "fixed" or one of KINDS
    choices: list[Any] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    step: int = 1
    log: bool = False
    value: Any = None
    when: dict[str, list[Any]] = field(default_factory=dict)

    def possible_values(self) -> list[Any]:
        """The values this parameter can take, as far as validation needs to know them."""
        if self.kind in ("fixed", "value"):
            return [self.value]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def _bounds(name: str, kind: str, raw: Any) -> tuple[float, float]:
    if not (isinstance(raw, list | tuple) and len(raw) == 2):
        raise SpecError(f"space.{name}.{kind}: expected [low, high]")
    try:
        low, high = float(raw[0]), float(raw[1])
    except (TypeError, ValueError):
        raise SpecError(f"space.{name}.{kind}: bounds must be numbers, got {list(raw)}") from None
    if not low < high:
        raise SpecError(f"space.{name}.{kind}: low must be below high, got [{raw[0]}, {raw[1]}]")
    if kind == "loguniform" and low <= 0:
        raise SpecError(f"space.{name}.loguniform: bounds must be > 0, got [{raw[0]}, {raw[1]}]")
    return low, high


MODEL = "model"  # "Arch/encoder" pairs: a choice over combinations, where arch x encoder would be too many


def split_model(value: Any) -> tuple[str, str]:
    """'Unet/resnet34' -> ('Unet', 'resnet34'); the encoder may itself hold no slash."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise SpecError(f"space.model: {value!r} is not Arch/encoder, e.g. Unet/resnet34")
    arch, encoder = value.split("/")
    return arch.strip(), encoder.strip()


def pairs(params: dict[str, Param]) -> list[tuple[str, str]]:
    """Every architecture / encoder combination the space can draw."""
    if MODEL in params:
        return [split_model(v) for v in params[MODEL].possible_values()]

    def values(name: str) -> list[Any]:
        return params[name].possible_values() if name in params else [DEFAULTS[name]]

    return [(a, e) for a in values("arch") for e in values("encoder")]


def parse_param(name: str, raw: Any) -> Param:
    if name not in PARAMETERS and name != MODEL:
        raise SpecError(f"space.{name}: unknown parameter (known: {MODEL}, {', '.join(PARAMETERS)})")
    if not isinstance(raw, dict) or not (set(raw) & set(KINDS)):
        return Param(name, "fixed", value=raw)
    kinds = [k for k in KINDS if k in raw]
    extra = set(raw) - set(KINDS) - {"when", "step", "log"}
    if len(kinds) != 1 or extra:
        raise SpecError(
            f"space.{name}: give exactly one of {', '.join(KINDS)} (and optionally when), got {sorted(raw)}"
        )
    kind = kinds[0]
    when_raw = raw.get("when") or {}
    if not isinstance(when_raw, dict):
        raise SpecError(f"space.{name}.when: expected a mapping of parameter -> value or list of values")
    when = {k: v if isinstance(v, list) else [v] for k, v in when_raw.items()}
    p = Param(name, kind, when=when)
    if kind == "choice":
        if not isinstance(raw["choice"], list) or not raw["choice"]:
            raise SpecError(f"space.{name}.choice: expected a non-empty list")
        for c in raw["choice"]:
            if c is not None and not isinstance(c, bool | int | float | str):
                raise SpecError(f"space.{name}.choice: {c!r} is not a plain value (null, bool, number or string)")
        p.choices = list(raw["choice"])
    elif kind == "value":
        p.value = raw["value"]
    else:
        p.low, p.high = _bounds(name, kind, raw[kind])
        p.log = kind == "loguniform" or bool(raw.get("log", False))
        if kind == "int":
            if p.low != int(p.low) or p.high != int(p.high):
                raise SpecError(f"space.{name}.int: bounds must be whole numbers")
            p.step = int(raw.get("step", 1))
    return p


def parse_space(raw: dict[str, Any]) -> dict[str, Param]:
    params: dict[str, Param] = {}
    for name, entry in raw.items():
        p = parse_param(str(name), entry)
        for dep in p.when:
            if dep not in params and not (dep in ("arch", "encoder") and MODEL in params):  # model sets both
                raise SpecError(f"space.{name}.when: {dep!r} must be a parameter listed before {name!r}")
        params[p.name] = p
    if MODEL in params and ({"arch", "encoder"} & set(params)):
        raise SpecError("space.model: give either model (Arch/encoder pairs) or arch and encoder, not both")
    return params


def sample(trial: Any, params: dict[str, Param]) -> TrialConfig:
    """Draw one configuration through an Optuna trial (define-by-run); defaults fill the rest."""
    config = dict(DEFAULTS)
    for p in params.values():
        if any(config.get(dep) not in allowed for dep, allowed in p.when.items()):
            continue
        if p.name == MODEL:
            value = p.value if p.kind in ("fixed", "value") else trial.suggest_categorical(p.name, p.choices)
            config["arch"], config["encoder"] = split_model(value)
        elif p.kind in ("fixed", "value"):
            config[p.name] = p.value
        elif p.kind == "choice":
            config[p.name] = trial.suggest_categorical(p.name, p.choices)
        elif p.kind == "int":
            config[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=p.step, log=p.log)
        else:
            config[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return TrialConfig(**config)


def _check_value(name: str, value: Any, num_classes: int) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name``; None when it is."""
    from segtune.training import augment, losses, models

    def number(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    if name == MODEL:
        try:
            arch, encoder = split_model(value)
        except SpecError as e:
            return str(e).removeprefix("space.model: ")
        if problem := models.check_arch(arch):
            return problem
        # segtune's own networks and a user's class take no encoder: "SmallUNet/-" names one
        return models.check_encoder(encoder) if arch in models.ARCHITECTURES else None
    if name == "arch":
        return models.check_arch(value)
    if name == "encoder":
        return models.check_encoder(value)
    if name == "encoder_weights":
        return None if value is None or isinstance(value, str) else "must be null or a weights name like imagenet"
    if name == "loss":
        return losses.check_loss(value, num_classes)
    if name == "augment":
        return (
            None
            if value in augment.PIPELINES
            else f"unknown augmentation {value!r} (known: {', '.join(augment.PIPELINES)})"
        )
    if name == "optimizer":
        return None if value in OPTIMIZERS else f"unknown optimizer {value!r} (known: {', '.join(OPTIMIZERS)})"
    if name == "schedule":
        return None if value in SCHEDULES else f"unknown schedule {value!r} (known: {', '.join(SCHEDULES)})"
    if name == "lr":
        return None if number(value) and value > 0 else f"must be > 0, got {value!r}"
    if name == "weight_decay":
        return None if number(value) and value >= 0 else f"must be >= 0, got {value!r}"
    if name in WHOLE_NUMBERS:
        return None if isinstance(value, int) and value >= 1 else f"must be a whole number >= 1, got {value!r}"
    if name in ("aug_strength", "tversky_alpha", "momentum"):
        return None if number(value) and 0 <= value <= 1 else f"must be in [0, 1], got {value!r}"
    if name == "focal_gamma":
        return None if number(value) and value >= 0 else f"must be >= 0, got {value!r}"
    if name == "class_weights":
        if value is None or value == MEDIAN_FREQUENCY:
            return None
        ok = isinstance(value, list) and len(value) == num_classes and all(number(w) and w >= 0 for w in value)
        return None if ok else f"must be null, {MEDIAN_FREQUENCY}, or a list of {num_classes} non-negative weights"
    return None


def validate_space(params: dict[str, Param], num_classes: int) -> None:
    for p in params.values():
        if p.kind == "int" and p.name not in WHOLE_NUMBERS:
            raise SpecError(f"space.{p.name}.int: {p.name} is not a whole-number parameter")
        for v in p.possible_values():
            why = _check_value(p.name, v, num_classes)
            if why:
                raise SpecError(f"space.{p.name}: {why}")


def validate_config(config: dict[str, Any], num_classes: int) -> TrialConfig:
    """A fixed configuration (a retrain spec's ``config``): known keys, acceptable values, defaults for the rest."""
    typed = TrialConfig.from_dict(config, where="config")
    for name, value in config.items():
        why = _check_value(name, value, num_classes)
        if why:
            raise SpecError(f"config.{name}: {why}")
    return typed


def sample_configs(params: dict[str, Param], n: int, seed: int = 0) -> list[tuple[TrialConfig, dict[str, Any]]]:
    """A few (config, sampled params) pairs drawn without a store, for ``segtune check``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask()
        configs.append((sample(trial, params), dict(trial.params)))
        study.tell(trial, 0.0)
    return configs


def active_params(params: dict[str, Param], config: TrialConfig) -> dict[str, Any]:
    """A configuration in the space's own terms: the values of the parameters it samples, those whose
    ``when`` holds (what Optuna records as a trial's params)."""
    values = config.to_dict()
    out: dict[str, Any] = {}
    for p in params.values():
        if p.kind in ("fixed", "value") or any(values.get(d) not in allowed for d, allowed in p.when.items()):
            continue
        out[p.name] = f"{config.arch}/{config.encoder}" if p.name == MODEL else values[p.name]
    return out


def stratified_design(params: dict[str, Param], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` start-up configurations that cover every choice of every categorical parameter as evenly as
    ``n`` allows (each choice ``n / len(choices)`` times, shuffled independently per parameter), and
    numeric ranges by Latin hypercube (one draw per ``1/n`` stratum, on a log scale where the range is).
    A random start-up of ten draws leaves some choices unseen; this one does not."""
    rng = np.random.default_rng(seed)
    columns: dict[str, list[Any]] = {}
    for p in params.values():
        if p.kind == "choice":
            repeated = [p.choices[i % len(p.choices)] for i in range(n)]
            columns[p.name] = [repeated[i] for i in rng.permutation(n)]
        elif p.kind in ("uniform", "loguniform", "int"):
            u = (rng.permutation(n) + rng.uniform(size=n)) / n
            low, high = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
            draws = [low + x * (high - low) for x in u]
            draws = [math.exp(d) for d in draws] if p.log else draws
            if p.kind == "int":
                draws = [int(p.low + round((d - p.low) / p.step) * p.step) for d in draws]
            columns[p.name] = draws
    return [{name: column[i] for name, column in columns.items()} for i in range(n)]


def starting_point_params(params: dict[str, Param], point: dict[str, Any], num_classes: int, where: str) -> dict:
    """A starting point (a known-good configuration run first) as the params Optuna enqueues.

    Every value must lie inside the space: a choice it does not offer, a number outside the range, a
    value the space fixes to something else, or a parameter whose ``when`` the point does not meet is
    a SpecError naming it; nothing is dropped silently. Parameters the space fixes may be given (they
    must agree) and are left out of what is enqueued; searched ones the point leaves out are sampled.
    """
    point = dict(point)
    if MODEL in params and ({"arch", "encoder"} & set(point)):  # Unet + resnet34 written as a pair
        point[MODEL] = f"{point.pop('arch', DEFAULTS['arch'])}/{point.pop('encoder', DEFAULTS['encoder'])}"
    values = {**DEFAULTS, **{k: v for k, v in point.items() if k != MODEL}}
    if MODEL in point:
        values["arch"], values["encoder"] = split_model(point[MODEL])
    for name, p in params.items():
        if p.kind in ("fixed", "value") and name != MODEL:
            values[name] = p.value
    enqueue: dict[str, Any] = {}
    for name, value in point.items():
        if name not in PARAMETERS and name != MODEL:
            raise SpecError(f"{where}.{name}: unknown parameter (known: {MODEL}, {', '.join(PARAMETERS)})")
        why = _check_value(name, value, num_classes)
        if why:
            raise SpecError(f"{where}.{name}: {why}")
        p = params.get(name)
        if p is None or p.kind in ("fixed", "value"):
            fixed = DEFAULTS[name] if p is None else p.value
            if value != fixed:
                raise SpecError(
                    f"{where}.{name}: {value!r}, but the space fixes {name} to {fixed!r}; "
                    f"search it (space.{name}), leave it out of the starting point, or run without "
                    "starting points (--set search.starting_points=[])"
                )
            continue
        if p.kind == "choice" and value not in p.choices:
            raise SpecError(f"{where}.{name}: {value!r} is not among space.{name}'s choices {p.choices}")
        if p.kind in ("uniform", "loguniform", "int") and not (p.low <= value <= p.high):
            raise SpecError(f"{where}.{name}: {value!r} lies outside space.{name}'s range [{p.low:g}, {p.high:g}]")
        for dep, allowed in p.when.items():
            if values.get(dep) not in allowed:
                raise SpecError(
                    f"{where}.{name}: the space samples {name} only when {dep} is one of {allowed}, "
                    f"and this point's {dep} is {values.get(dep)!r}"
                )
        enqueue[name] = value
    return enqueue


NEAR_SPREAD = 0.25  # a numeric change: a normal step of this share of the range (on a log scale where it is one)


def _active(params: dict[str, Param], point: dict[str, Any]) -> dict[str, Any]:
    """``point`` without the parameters whose ``when`` it no longer meets."""
    values = {**DEFAULTS, **{k: v for k, v in point.items() if k != MODEL}}
    if MODEL in point:
        values["arch"], values["encoder"] = split_model(point[MODEL])
    return {k: v for k, v in point.items() if not any(values.get(d) not in a for d, a in params[k].when.items())}


def perturb(params: dict[str, Param], point: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """A neighbour of ``point`` (a trial's params, as Optuna records them): one of its searched parameters changed,
    two a third of the time, the rest kept (PriorBand's sampling around the incumbent). A choice takes another of
    its values; a number moves by a normal step of NEAR_SPREAD of its range (on a log scale for a log range),
    clipped to it. Parameters the change deactivates (a ``when`` no longer met) are dropped; ones it activates are
    left for the sampler to draw."""
    searched = [
        p
        for p in params.values()
        if p.name in point
        and (p.kind in ("int", "uniform", "loguniform") or (p.kind == "choice" and len(p.choices) > 1))
    ]
    if not searched:
        return dict(point)
    n = 2 if len(searched) > 1 and rng.random() < 1 / 3 else 1
    out = dict(point)
    for i in rng.choice(len(searched), size=n, replace=False):
        p = searched[int(i)]
        value = point[p.name]
        if p.kind == "choice":
            others = [c for c in p.choices if c != value]
            out[p.name] = others[int(rng.integers(len(others)))]
            continue
        low, high = (math.log(p.low), math.log(p.high)) if p.log else (p.low, p.high)
        x = (math.log(value) if p.log else float(value)) + rng.normal(0.0, NEAR_SPREAD * (high - low))
        x = min(high, max(low, x))
        moved = math.exp(x) if p.log else x
        if p.kind == "int":
            moved = int(p.low + round((moved - p.low) / p.step) * p.step)
            if moved == value:  # a whole-number step of at least one
                moved = int(min(p.high, value + p.step) if rng.random() < 0.5 or value <= p.low else value - p.step)
        out[p.name] = moved
    return _active(params, out)
