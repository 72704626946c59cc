"""Settings dataclasses from parsed YAML, with the checks derived from the dataclass itself.

A section's allowed keys are its dataclass's fields, each value's type is the field's annotation
(int, float, str, bool, Literal choices, `X | None`, tuple/list/dict of those, a nested dataclass), and
value rules are the dataclass's own __post_init__. So each rule is written once, beside the setting.
Messages name the key: `pipeline.retries: expected int, got 'x'`.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from hicom.core.errors import ConfigError


def build_section(cls: type, data: Any, where: str) -> Any:
    """cls(**data) after checking keys and types against cls's fields; a missing required field is named."""
    values = check_section(cls, data, where)
    for f in dataclasses.fields(cls):
        if f.init and f.name not in values and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}.{f.name}: missing")
    try:
        return cls(**values)
    except ConfigError:
        raise
    except ValueError as exc:  # a value rule written with ValueError; it names its key already
        raise ConfigError(str(exc)) from None


def check_section(cls: type, data: Any, where: str) -> dict:
    """The keys given (possibly not all of cls's fields), each checked against its field's annotation.

    Returns the values as cls takes them (lists made tuples where annotated so, nested dataclasses built,
    floats that YAML left as strings, like 1e-3, made floats)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    return {key: check_value(value, hints[key], f"{where}.{key}") for key, value in data.items()}


def check_value(value: Any, hint: Any, where: str) -> Any:
    """`value` if it fits the annotation `hint` (converted as check_section says), else a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, where)
    if origin is Literal:
        if any(type(choice) is type(value) and choice == value for choice in args):
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(_shown(c) for c in args)}, got {value!r}")
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        for option in options:
            try:
                return check_value(value, option, where)
            except ConfigError:
                if len(options) == 1:
                    raise
        raise ConfigError(f"{where}: expected {' or '.join(_type_name(a) for a in options)}, got {value!r}")
    container = origin or hint
    if container in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if container is tuple else items
    if container is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if len(args) == 2:
            return {k: check_value(v, args[1], f"{where}.{k}") for k, v in value.items()}
        return value
    return _scalar(value, hint, where)


def _scalar(value: Any, kind: type, where: str) -> Any:
    """bool is never an int or a float; a float may be written as an int, or as a string YAML left unparsed (1e-3)."""
    if isinstance(value, bool):
        if kind is bool:
            return value
    elif kind is float and isinstance(value, (int, float)):
        return value
    elif kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, kind):
        return value
    raise ConfigError(f"{where}: expected {_type_name(kind)}, got {value!r}")


def _shown(choice: Any) -> str:
    return str(choice).lower() if isinstance(choice, bool) else str(choice)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


def check_numbers(section: str, settings: Any, *, at_least_1: tuple[str, ...] = (), at_least_0: tuple[str, ...] = (),
                  above_0: tuple[str, ...] = (), fraction: tuple[str, ...] = ()) -> None:
    """Value rules of a settings dataclass's numeric fields, for its __post_init__: a ConfigError naming
    `section.field` and the value. at_least_1: counts (frames, steps, batch sizes); at_least_0: counts that
    may be zero (retries, workers); above_0: rates, durations; fraction: within [0, 1]. None (an optional
    setting left out) passes."""
    rules = [(at_least_1, lambda v: v >= 1, "must be >= 1"), (at_least_0, lambda v: v >= 0, "must be >= 0"),
             (above_0, lambda v: v > 0, "must be > 0"), (fraction, lambda v: 0 <= v <= 1, "must be within [0, 1]")]
    for names, ok, rule in rules:
        for name in names:
            value = getattr(settings, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ConfigError(f"{section}.{name}: {rule}, got {value!r}")
