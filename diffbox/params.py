"""Typed workflow parameters, declared once.

A workflow declares its parameters as a ParamSpec beside its run(); the UI form, the API,
config defaults, presets and output metadata are all derived from that declaration.
`validate()` turns whatever arrived (UI values, API JSON, a preset) into a clean dict or raises
one InvalidParams naming every bad field, before any GPU work starts.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Literal, Mapping

Tier = Literal["basic", "advanced", "expert"]
Kind = Literal["int", "float", "bool", "str", "text", "choice", "seed", "list"]

SEED_MAX = 2**32 - 1
RANDOM_SEED = -1
DEFAULT_MAX_TEXT = 20_000


class InvalidParams(ValueError):
    """One or more parameters are bad; `errors` maps each field name to a readable reason."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in self.errors.items()))


@dataclass(frozen=True)
class Param:
    name: str
    kind: Kind
    default: Any
    help: str
    tier: Tier = "basic"
    label: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[str | int, ...] | None = None  # "choice": its strings; "int": the only numbers allowed
    multiple_of: int | None = None
    # (modulus, remainder): num_frames must be 4n+1 because Wan's VAE compresses time by 4.
    congruent: tuple[int, int] | None = None
    nullable: bool = False
    required: bool = False
    max_length: int = DEFAULT_MAX_TEXT
    max_items: int = 64
    # For kind="list": cleans one item or raises ValueError with a reason.
    item: Callable[[Any], Any] | None = field(default=None, compare=False)

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def clean(self, value: Any) -> Any:
        """Returns the cleaned value or raises ValueError with a reason (without the field name)."""
        if value is None or (self.kind not in ("str", "text", "list") and value == ""):
            if self.nullable:
                return None
            raise ValueError("a value is required")
        cleaned = _CLEANERS[self.kind](self, value)
        if self.required and cleaned in ("", []):
            raise ValueError("must not be empty")
        return cleaned


def _as_int(param: Param, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"must be a whole number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"must be a whole number, got {value!r}") from None
    if not isinstance(value, int):
        raise ValueError(f"must be a whole number, got {value!r}")
    return value


def _check_range(param: Param, value: float) -> None:
    low, high = param.minimum, param.maximum
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"must be between {_fmt(low)} and {_fmt(high)}, got {_fmt(value)}")
    if low is not None and value < low:
        raise ValueError(f"must be at least {_fmt(low)}, got {_fmt(value)}")
    if high is not None and value > high:
        raise ValueError(f"must be at most {_fmt(high)}, got {_fmt(value)}")


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def _clean_int(param: Param, value: Any) -> int:
    number = _as_int(param, value)
    if param.choices and number not in param.choices:  # a few allowed numbers (×2 / ×4): the form's dropdown
        raise ValueError(f"must be one of {', '.join(map(str, param.choices))}; got {number}")
    _check_range(param, number)
    if param.multiple_of and number % param.multiple_of:
        below = number - number % param.multiple_of
        raise ValueError(f"must be a multiple of {param.multiple_of} (e.g. {below} or "
                         f"{below + param.multiple_of}), got {number}")
    if param.congruent:
        modulus, remainder = param.congruent
        if number % modulus != remainder:
            below = number - (number - remainder) % modulus
            raise ValueError(f"must be {modulus}n+{remainder} (e.g. {below} or {below + modulus}), got {number}")
    return number


def _clean_float(param: Param, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    _check_range(param, float(value))
    return float(value)


def _clean_bool(param: Param, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false, got {value!r}")


def _clean_str(param: Param, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__}")
    if len(value) > param.max_length:
        raise ValueError(f"is too long ({len(value)} characters, at most {param.max_length})")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value if param.kind == "text" else value.strip()


def _clean_choice(param: Param, value: Any) -> str:
    if not isinstance(value, str) or value not in (param.choices or ()):
        raise ValueError(f"must be one of {', '.join(param.choices or ())}; got {value!r}")
    return value


def _clean_seed(param: Param, value: Any) -> int:
    seed = _as_int(param, value)
    if seed == RANDOM_SEED:
        return secrets.randbelow(SEED_MAX + 1)
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"must be -1 (random) or between 0 and {SEED_MAX}, got {seed}")
    return seed


def _clean_list(param: Param, value: Any) -> list:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ValueError(f"must be a list, got {type(value).__name__}")
    if len(value) > param.max_items:
        raise ValueError(f"has {len(value)} items, at most {param.max_items}")
    if param.item is None:
        return list(value)
    cleaned = []
    for index, item in enumerate(value):
        try:
            cleaned.append(param.item(item))
        except ValueError as exc:
            raise ValueError(f"item {index + 1}: {exc}") from None
    return cleaned


def is_text(value: Any) -> bool:
    """False if `value` (or a string inside it) holds a lone UTF-16 surrogate, which no file can store."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, Mapping):
        return all(is_text(k) and is_text(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_text(item) for item in value)
    return True


_CLEANERS: dict[str, Callable[[Param, Any], Any]] = {
    "int": _clean_int, "float": _clean_float, "bool": _clean_bool, "str": _clean_str,
    "text": _clean_str, "choice": _clean_choice, "seed": _clean_seed, "list": _clean_list,
}

# A cross-field rule: receives the cleaned values, returns {field: reason} for what it rejects.
Check = Callable[[dict], Mapping[str, str]]


@dataclass(frozen=True)
class ParamSpec:
    workflow: str
    params: tuple[Param, ...]
    checks: tuple[Check, ...] = ()

    def __post_init__(self):
        names = [p.name for p in self.params]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"{self.workflow}: parameters declared twice: {sorted(duplicates)}")
        for param in self.params:
            if param.kind != "seed" and not param.required:
                param.clean(param.default)  # a bad default is a programming error: fail at import

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(p.name == name for p in self.params)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def tier(self, tier: Tier) -> list[Param]:
        return [p for p in self.params if p.tier == tier]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def validate(self, values: Mapping[str, Any] | None) -> dict[str, Any]:
        """Clean dict with every parameter; missing ones take their default; seed -1 becomes the used seed."""
        if values is None:
            values = {}
        if not isinstance(values, Mapping):
            raise InvalidParams({"params": f"must be a JSON object of parameters, got {type(values).__name__}"})
        errors: dict[str, str] = {}
        for key, value in values.items():  # unencodable text would only fail later, when saved
            if not is_text(key):
                errors["params"] = "a parameter name holds a lone surrogate (such as \\ud800), which is not text"
            elif not is_text(value):
                errors[str(key)] = "holds a lone surrogate (such as \\ud800), which is not text; retype it"
        if errors:
            raise InvalidParams(errors)
        unknown = [str(k) for k in values if k not in self]
        if unknown:
            errors["params"] = (f"unknown parameter{'s' if len(unknown) > 1 else ''} "
                                f"{', '.join(sorted(unknown))} (known: {', '.join(self.names)})")
        clean: dict[str, Any] = {}
        for param in self.params:
            try:
                clean[param.name] = param.clean(values.get(param.name, param.default))
            except ValueError as exc:
                errors[param.name] = str(exc)
        if not errors:
            for check in self.checks:
                errors.update(check(clean))
        if errors:
            raise InvalidParams(errors)
        return clean

    def extend(self, *params: Param, workflow: str | None = None, checks: Iterable[Check] = (),
               drop: Iterable[str] = ()) -> "ParamSpec":
        """A new spec that inherits these parameters (SVI inherits I2V's rather than re-typing them)."""
        dropped = set(drop)
        kept = tuple(p for p in self.params if p.name not in dropped)
        return ParamSpec(workflow or self.workflow, kept + tuple(params), self.checks + tuple(checks))

    def first(self, *names: str) -> "ParamSpec":
        """The same spec with `names` moved to the front (form order: what a user fills in first)."""
        front = tuple(self[name] for name in names)
        return replace(self, params=front + tuple(p for p in self.params if p.name not in names))

    def with_defaults(self, overrides: Mapping[str, Any]) -> "ParamSpec":
        """The same spec with other defaults (demo mode, config defaults); the overrides are validated."""
        if not overrides:
            return self
        clean = self.validate({**self.defaults(), **overrides})
        # A seed default stays as given: -1 must stay "random", not the number drawn while validating.
        params = tuple(replace(p, default=overrides[p.name] if p.kind == "seed" else clean[p.name])
                       if p.name in overrides else p for p in self.params)
        return replace(self, params=params)
