"""Flags generated from config dataclasses, so a default lives in one place (the field).

``add_fields(parser, Config, HELP)`` adds one flag per field: ``worst_of`` is
``--worst-of``, booleans are switches, tuples take several values, dicts take a JSON
object; each help line shows the field's default once. ``read_fields(args, Config)``
gives back the keyword arguments of that dataclass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp):
    """``int | None`` -> int; other types as they are."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _selected(cls, only, skip):
    return [f for f in dataclasses.fields(cls)
            if (only is None or f.name in only) and f.name not in skip]


def default_of(field: dataclasses.Field):
    """The field's default; None for a field without one (a required flag)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def add_fields(parser, cls, help: dict, *, only=None, skip=(), rename=None, required=(), choices=None,
               prefix: str = "") -> None:
    """One flag per field of ``cls`` (``only`` / ``skip`` select; ``rename`` maps a field
    to another flag name; ``choices`` maps a field to its allowed values)."""
    hints = typing.get_type_hints(cls)
    rename, choices = rename or {}, choices or {}
    for field in _selected(cls, only, skip):
        tp = _base_type(hints[field.name])
        default = default_of(field)
        text = help.get(field.name, "")
        # an unset (None) default is explained by the help text itself: one default per flag
        flag = flag_name(rename.get(field.name, field.name))
        shown = default is None or tp is bool or field.name in required
        kwargs = {"dest": prefix + field.name, "help": text if shown else f"{text} (default: {default})"}
        if tp is not bool:
            kwargs["metavar"] = flag[2:].replace("-", "_").upper()
        if field.name in required:
            kwargs["required"] = True
        elif tp is bool:
            kwargs.update(action="store_true", default=default)
        elif typing.get_origin(tp) is tuple:
            kwargs.update(nargs="+", type=typing.get_args(tp)[0], default=default)
        elif tp is dict:
            kwargs.update(type=_json_object, default=default)
        else:
            kwargs.update(type=tp, default=default)
        if field.name in choices:
            kwargs["choices"] = choices[field.name]
            kwargs.pop("metavar", None)
        parser.add_argument(flag, **kwargs)


def read_fields(args, cls, *, only=None, skip=(), prefix: str = "") -> dict:
    """The keyword arguments of ``cls`` that ``add_fields`` put on ``args``."""
    return {f.name: getattr(args, prefix + f.name) for f in _selected(cls, only, skip)}
