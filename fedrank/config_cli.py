"""`fedrank config --role edge|rsu|cloud`: a commented example TOML generated from the role's settings model.

Field descriptions become comments, defaults become values, required fields get an example value marked
REQUIRED, nested models become tables, lists of models arrays of tables, and fields that are unset by
default are shown commented out. `systemd/<role>.example.toml` are this command's output; a test keeps
them in sync and loads each through `load_settings`, so an example is always a valid configuration.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedrank.settings import AgentSettings, ConfigError, load_settings
from fedrank.state import atomic_write_bytes

# role -> (module, class); imported lazily so `fedrank config --role cloud` never imports torch.
ROLES: dict[str, tuple[str, str]] = {
    "edge": ("edge_agent.settings", "EdgeSettings"),
    "rsu": ("rsu_agent.settings", "RsuSettings"),
    "cloud": ("cloud_agent.settings", "CloudSettings"),
}

# Example values for required fields, per role (a field's own `examples=` wins). The RSU layers are the
# default model's (MiniLM-L6: 6 layers, hidden 384) LoRA targets query and value, named as in named_modules().
_MINILM_QV = {f"encoder.layer.{i}.attention.self.{m}": [384, 384] for i in range(6) for m in ("query", "value")}
HINTS: dict[str, dict[str, Any]] = {
    "edge": {"id": "veh-1", "tasks": [{"name": "sst2", "task_type": "sentence"}]},
    "rsu": {
        "id": "rsu-1",
        "coverage": {"shape": "circle", "cx": 0.0, "cy": 0.0, "radius": 300.0},
        "tasks": [{"name": "sst2", "task_type": "sentence", "layers": _MINILM_QV}],
    },
    "cloud": {"id": "cloud-1", "tasks": ["sst2"], "e_total_j": 20000.0},
}
_TLS_HINT = {"ca_file": "/etc/fedrank/tls/ca.crt", "cert_file": "/etc/fedrank/tls/{id}.crt",
             "key_file": "/etc/fedrank/tls/{id}.key"}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


def settings_class(role: str) -> type[AgentSettings]:
    """The settings model of `role`; ConfigError when the role is unknown or its package is not installed."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    module, name = ROLES[role]
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"role {role} is not available in this build ({module}.{name}: {exc})") from exc
    return cls


# -- values ----------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    """A default or example as TOML-able data: models -> dicts, paths -> str, tuples -> lists."""
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json", exclude_none=False)
    if isinstance(v, Enum):
        return v.value
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    return v


def _key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _scalar(v: Any) -> str:
    """One TOML value, inline."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_scalar(x)}" for k, x in v.items()) + " }" if v else "{}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


# -- types -----------------------------------------------------------------------------------
def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """(type without None, whether None was allowed)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else Union[tuple(args)]), optional  # noqa: UP007
    return tp, False


def _models(tp: Any) -> list[type[BaseModel]]:
    """The model classes `tp` is (one model, or a union of models); [] for anything else."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        if all(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return list(args)
    return []


def _list_item_models(tp: Any) -> list[type[BaseModel]]:
    return _models(typing.get_args(tp)[0]) if typing.get_origin(tp) is list and typing.get_args(tp) else []


def _pick(models: list[type[BaseModel]], value: dict[str, Any] | None) -> type[BaseModel]:
    """The union member whose literal tag field matches `value` (e.g. shape = "rect"); else the first."""
    for m in models:
        for name, f in m.model_fields.items():
            tags = typing.get_args(f.annotation) if typing.get_origin(f.annotation) is Literal else ()
            if value and value.get(name) in tags:
                return m
    return models[0]


def _placeholder(tp: Any, info: FieldInfo | None = None) -> Any:
    """A value of type `tp` that passes its simple bounds; used only where nothing better is known."""
    tp, _ = _strip_optional(tp)
    models = _models(tp)
    if models:
        return {n: _placeholder(f.annotation, f) for n, f in models[0].model_fields.items() if f.is_required()}
    origin, lo = typing.get_origin(tp), 0
    for m in info.metadata if info else []:
        if getattr(m, "ge", None) is not None:
            lo = max(lo, m.ge)
        if getattr(m, "gt", None) is not None:
            lo = max(lo, m.gt + 1)
    if origin is Literal:
        return typing.get_args(tp)[0]
    if origin in (list, tuple, set):
        args = typing.get_args(tp) or (str,)
        return [_placeholder(a) for a in args if a is not Ellipsis] if origin is tuple else [_placeholder(args[0])]
    if origin is dict:
        return {"name": _placeholder(typing.get_args(tp)[1])}
    if tp is bool:
        return False
    if tp is int:
        return int(lo)
    if tp is float:
        return float(lo)
    if tp is Path:
        return "/path/to/file"
    return "CHANGE-ME"


# -- rendering -------------------------------------------------------------------------------
def _comment(lines: list[str], text: str | None, prefix: str) -> None:
    for line in (text or "").splitlines():
        lines.append(f"{prefix}# {line}".rstrip())


def _render_model(
    cls: type[BaseModel], value: dict[str, Any], hint: dict[str, Any], path: list[str], lines: list[str], prefix: str
) -> None:
    """Write `cls`'s fields: keys first, then tables and arrays of tables (TOML needs that order)."""
    later: list[tuple[str, FieldInfo, Any, bool, bool]] = []  # (name, info, value, required, unset)
    for name, info in cls.model_fields.items():
        tp, _ = _strip_optional(info.annotation)
        required = info.is_required()
        if required:
            v = _plain(info.examples[0]) if info.examples else hint.get(name, _placeholder(info.annotation, info))
        else:
            v = value.get(name, _plain(info.get_default(call_default_factory=True)))
        unset = v is None
        if unset:  # show an example, commented out
            v = _plain(info.examples[0]) if info.examples else hint.get(name, _placeholder(tp, info))
        is_table = bool(_models(tp)) or (typing.get_origin(tp) is dict and bool(v))
        if is_table or (_list_item_models(tp) and (v or unset)):
            later.append((name, info, v, required, unset))
            continue
        if v == [] and _list_item_models(tp):
            later.append((name, info, [_placeholder(_list_item_models(tp)[0])], required, True))
            continue
        lines.append("")
        _comment(lines, info.description, prefix)
        if required:
            lines.append(f"{prefix}# REQUIRED: example value, replace it")
        lines.append(f"{prefix}# {_key(name)} = {_scalar(v)}   # unset by default" if unset else
                     f"{prefix}{_key(name)} = {_scalar(v)}")
    for name, info, v, required, unset in later:
        tp, _ = _strip_optional(info.annotation)
        sub_prefix = prefix + ("# " if unset else "")
        full = ".".join(_key(p) for p in [*path, name])
        lines.append("")
        _comment(lines, info.description, prefix)
        if required:
            lines.append(f"{prefix}# REQUIRED: example values, replace them")
        if unset:
            lines.append(f"{prefix}# unset by default; to set it, uncomment:")
        sub_hint = hint.get(name) if isinstance(hint.get(name), (dict, list)) else None
        if item_models := _list_item_models(tp):
            for i, item in enumerate(v):
                lines.append(f"{sub_prefix}[[{full}]]")
                item_hint = sub_hint[i] if isinstance(sub_hint, list) and i < len(sub_hint) else {}
                _render_model(_pick(item_models, item), item, item_hint, [*path, name], lines, sub_prefix)
        elif models := _models(tp):
            if len(models) > 1:
                lines.append(f"{prefix}# one of: " + ", ".join(m.__name__ for m in models))
            lines.append(f"{sub_prefix}[{full}]")
            _render_model(_pick(models, v), v, sub_hint if isinstance(sub_hint, dict) else {}, [*path, name],
                          lines, sub_prefix)
        else:  # a dict of values: one key per line reads better than a long inline table
            lines.append(f"{sub_prefix}[{full}]")
            lines.extend(f"{sub_prefix}{_key(k)} = {_scalar(x)}" for k, x in v.items())


def render_example(cls: type[AgentSettings], hints: dict[str, Any] | None = None) -> str:
    """The commented example TOML of a settings model.

    Args:
        cls: an `AgentSettings` subclass.
        hints: example values for required fields (and unset ones), nested like the TOML.

    Returns:
        The TOML text; deterministic, so it can be compared with a checked-in file.
    """
    role = cls.ROLE or cls.__name__
    hints = copy.deepcopy(hints or {})  # the defaults below must not leak into the caller's dict
    agent_id = str(hints.get("id", "CHANGE-ME"))
    hints.setdefault("metrics_port", 9100)
    broker = hints.setdefault("broker", {})
    broker.setdefault("tls", {k: v.format(id=agent_id) for k, v in _TLS_HINT.items()})
    for key in ("client_id", "username"):  # the broker's ACLs expect both to equal the agent id
        broker.setdefault(key, agent_id)
    lines = [
        f"# fedrank {role} configuration, generated by `fedrank config --role {role}`",
        f"# from {cls.__module__}.{cls.__name__}.",
        "# Every key can be overridden by an environment variable FEDRANK_<KEY>; nested keys join with __",
        "# (FEDRANK_BROKER__HOST=10.0.0.2). Keys marked REQUIRED hold example values: replace them.",
        "# Commented-out keys are unset by default. Check a file with `fedrank config --role "
        f"{role} --check FILE`.",
    ]
    _render_model(cls, {}, hints, [], lines, "")
    return "\n".join(lines).strip() + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--role", required=True, choices=sorted(ROLES), help="which agent's configuration")
    parser.add_argument("--out", type=Path, help="write the example here (atomically) instead of stdout")
    parser.add_argument("--check", type=Path, metavar="FILE", help="validate FILE instead of printing an example")


def run(args: argparse.Namespace) -> int:
    try:
        cls = settings_class(args.role)
        if args.check is not None:
            s = load_settings(cls, args.check)
            print(f"{args.check}: valid {args.role} configuration for agent {s.id}")
            return 0
        text = render_example(cls, HINTS.get(args.role))
    except ConfigError as exc:
        print(f"fedrank config: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        atomic_write_bytes(args.out, text.encode())
    return 0
