"""Strict config loading shared by build recipes and training configs.

YAML is read with the safe loader; a duplicate key, an unknown key or a value of the wrong type is a
`ConfigError` whose one-line message names the dotted key (`perturbation.t`). Overrides use the
`a.b=c` form of the CLI's `--set`, with `c` parsed as a YAML scalar.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mfpo_data.errors import ConfigError
from mfpo_data.secrets import scrub
from mfpo_data.textfile import RecordError, read_text


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys, naming their dotted path."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in out:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"duplicate key '{_path_of(node, key_node, loader)}' (line {line})")
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


def _path_of(parent: yaml.MappingNode, key_node: yaml.Node, loader: _StrictLoader) -> str:
    # Walk the document from the root to find the dotted path of `key_node`. Each node is walked once: an
    # alias makes one node reachable by many paths (an "alias bomb", 9 levels of 9, has 9**9).
    seen: set[int] = set()

    def walk(node: yaml.Node, prefix: str) -> str | None:
        if id(node) in seen:
            return None
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}{k.value}"
                if k is key_node:
                    return name
                found = walk(v, name + ".")
                if found:
                    return found
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                found = walk(v, f"{prefix}{i}.")
                if found:
                    return found
        return None

    root = getattr(loader, "_mfpo_root", None)
    return (walk(root, "") if root is not None else None) or str(key_node.value)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# Numbers as YAML 1.2 reads them: "12:00:00" (a Slurm time) stays a string instead of PyYAML's base-60
# integer 43200, and "1e-4" is a float instead of a string.
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(0|[1-9][0-9_]*)$"), list("-+0123456789"))
_StrictLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping safely; duplicate keys are errors."""
    path = Path(path)
    try:
        text = read_text(path, "config file")  # missing, a folder, not UTF-8: one line
    except RecordError as e:
        raise ConfigError(str(e)) from None
    return loads_yaml(text, name=scrub(str(path)))


def loads_yaml(text: str, name: str = "<string>") -> dict:
    loader = _StrictLoader(text)
    loader._mfpo_name = name
    try:
        loader._mfpo_root = loader.get_single_node()
        data = loader.construct_document(loader._mfpo_root) if loader._mfpo_root is not None else None
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise ConfigError(f"{name}: invalid YAML: {msg}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping, got {type(data).__name__}")
    return data


# Python refuses to turn more than 4300 digits into an int (a ValueError deep inside PyYAML); say so in one line.
_MAX_DIGITS = 4300


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    digits = len(loader.construct_scalar(node).lstrip("+-").replace("_", ""))
    if digits > _MAX_DIGITS:
        where = f"{loader._mfpo_name}: " if getattr(loader, "_mfpo_name", None) else ""
        raise ConfigError(f"{where}line {node.start_mark.line + 1}: a number of {digits} digits (at most "
                          f"{_MAX_DIGITS})")
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_StrictLoader.add_constructor(_INT, _construct_int)


def _short(value: Any) -> str:
    """A value as a message shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:50]}... ({len(text):,} characters)"


_COMMENT = re.compile(r"(^|\s)#")


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else ""  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ConfigError):
        value = raw
    if _COMMENT.search(raw) and not raw.lstrip().startswith(("[", "{", "'", '"')):
        value = raw.strip()  # on a command line "#" is text: YAML would drop it and what follows as a comment
    return key.split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Return a copy of `data` with each `a.b=c` applied. Unknown keys are caught later by `from_dict`."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, path: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widen to float). Raise ConfigError."""
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"'{path}' must be {_type_name(tp)}, got {_short(value)}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"'{path}' must be one of {_type_name(tp)}, got {_short(value)}")
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{path}' must be a list, got {_short(value)}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"'{path}' must have {len(args)} items, got {len(value)}")
            return tuple(coerce(v, a, f"{path}.{i}") for i, (v, a) in enumerate(zip(args, value, strict=True)))
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp, f"{path}.{i}") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{path}' must be a mapping, got {_short(value)}")
        args = typing.get_args(tp)
        if len(args) == 2:
            return {coerce(k, args[0], path): coerce(v, args[1], f"{path}.{k}") for k, v in value.items()}
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"'{path}' must be {_type_name(tp)}, got {_short(value)}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping, recursively; unknown keys and wrong types raise ConfigError."""
    where = path or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"'{where}' must be a mapping, got {_short(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"unknown key '{key}' (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = coerce(value, hints[name], f"{path}.{name}" if path else name)
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        key = f"{path}.{missing[0]}" if path else missing[0]
        raise ConfigError(f"missing required key '{key}'")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(path)
    return obj


def keyword_params(fn: Any, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, inspect.Parameter]:
    """The parameters of `fn` (a backend class: its `__init__`) that a recipe can set by name."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    return {
        n: p
        for n, p in inspect.signature(target).parameters.items()
        if n != "self" and n not in exclude and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_kwargs(fn: Any, options: Mapping[str, Any], path: str, exclude: frozenset[str] | set[str] = frozenset()) -> dict:
    """Validate `options` against the keyword parameters of `fn` (a backend class): names and types."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # annotations that cannot be resolved are not checked
        hints = {}
    params = keyword_params(fn, exclude)
    unknown = [k for k in options if k not in params]
    if unknown:
        raise ConfigError(f"unknown key '{path}.{unknown[0]}' (allowed: {', '.join(params) or 'none'})")
    out = {}
    for name, value in options.items():
        out[name] = coerce(value, hints.get(name, Any), f"{path}.{name}")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in out]
    if missing:
        raise ConfigError(f"missing required key '{path}.{missing[0]}'")
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass (or nested containers of them) as plain YAML-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
