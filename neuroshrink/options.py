"""RunConfig's command lines, generated from its fields: the options a command offers (grouped as
the demo's --help shows them), their help with each default, and the config a parsed line holds."""

import argparse
import dataclasses

from . import recipes
from .config import GROUPS, RunConfig, flag


def add_options(parser, names, defaults=None, default_notes=None):
    """argparse options for these RunConfig fields, grouped as the demo's --help shows them;
    no default is set (SUPPRESS): only what the command line names reaches the config,
    besides `defaults` (a command's own, e.g. a sweep's). `default_notes` says a field's
    default in words where the command's differs from the field's."""
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    groups = {group: parser.add_argument_group(group) for group in GROUPS}
    for name in names:
        f, meta = fields[name], fields[name].metadata
        group = groups.get(meta["group"]) or groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kwargs = dict(help=describe_default(f, (default_notes or {}).get(name)), default=argparse.SUPPRESS,
                      metavar=meta["metavar"])
        if f.type in (bool, bool | None):
            kwargs.pop("metavar")
            kwargs["action"] = argparse.BooleanOptionalAction if f.default is None else "store_true"
        else:
            kwargs.update(type=meta["parse"] or str, choices=meta["choices"], nargs="+" if meta["many"] else None)
        group.add_argument(flag(name), **kwargs)
    parser.set_defaults(**(defaults or {}))
    return groups


def resolved_defaults(names):
    """The values a run with nothing given trains with (the default recipe's), for these fields:
    the defaults of a command whose runs all get these settings explicitly (a sweep's)."""
    resolved = RunConfig().resolved()
    return {name: getattr(resolved, name) for name in names}


def describe_default(f, note=None):
    """The field's help with its default: `note`, its own, or each recipe's."""
    text = f.metadata["help"]
    if note:
        return f"{text} (default: {note})"
    if f.name in recipes.RECIPES["default"]:
        by_recipe = ", ".join(f"{name}: {recipe[f.name]}" for name, recipe in recipes.RECIPES.items())
        return f"{text} (recipe {by_recipe})"
    if f.default not in (None, False, ()):
        return f"{text} (default: {f.default})"
    return text


def demo_names():
    """The settings train_phase2.py's command line offers, in --help's order."""
    fields = dataclasses.fields(RunConfig)
    return [f.name for group in GROUPS for f in fields if f.metadata["group"] == group]


def all_names():
    return [f.name for f in dataclasses.fields(RunConfig)]


def sweep_names(kind=None):
    """The settings the sweeps' command lines offer; kind "shared": those every run of a sweep
    must agree on."""
    return [f.name for f in dataclasses.fields(RunConfig)
            if f.metadata["sweep"] and (kind is None or f.metadata["sweep"] == kind)]


def config_of(namespace):
    """The RunConfig fields a parsed command line holds."""
    names = set(all_names())
    return {k: v for k, v in vars(namespace).items() if k in names}
