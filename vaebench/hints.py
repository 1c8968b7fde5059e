"""The fix for a composition error, in words: Hydra and OmegaConf say what is wrong ("Key 'latnt_dim' not in
'Config'", "Value 'abc' ... could not be converted to Float") but not what to type instead. `fix_for` reads
their one-line message (sweep.one_line) and returns the hint that follows it: the key or option meant ("did
you mean latent_dim?"), or the form a value takes ("lr takes a number, e.g. lr=1e-3").

Only the schemas are read (vaebench.config.SCHEMAS, dataclasses), never a model: a typo costs no torch import.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Iterable, Optional

# What a value of each OmegaConf type looks like, for "could not be converted to Float" and the like.
VALUE_FORMS = {"Float": "a number, e.g. {key}=1e-3", "Integer": "a whole number, e.g. {key}=20",
               "Boolean": "true or false, e.g. {key}=true", "bool": "true or false, e.g. {key}=true"}


def schema_keys() -> dict[str, list[str]]:
    """Every settable key (dotted, as typed on the command line) -> the options of its group that have it (empty
    for a key every option has, or one outside the groups)."""
    from vaebench.config import SCHEMAS, Config

    keys: dict[str, list[str]] = {}

    def walk(schema: type, prefix: str, option: Optional[str]) -> None:
        for f in dataclasses.fields(schema):
            if f.name.startswith("_"):
                continue
            typ = f.type if isinstance(f.type, type) else None
            nested = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if nested is not None and dataclasses.is_dataclass(nested):
                walk(nested, f"{prefix}{f.name}.", option)
            elif typ is not None and dataclasses.is_dataclass(typ):
                walk(typ, f"{prefix}{f.name}.", option)
            else:
                keys.setdefault(f"{prefix}{f.name}", [])
                if option is not None:
                    keys[f"{prefix}{f.name}"].append(option)

    walk(Config, "", None)
    for group, options in SCHEMAS.items():
        for option, schema in options.items():
            walk(schema, f"{group}.", f"{group}={option}")
        for key, have in keys.items():  # a key every option of the group has needs no "only with"
            if key.startswith(f"{group}.") and len(set(have)) == len(options):
                keys[key] = []
    for group in SCHEMAS:
        keys.pop(group, None)  # `model: Any` in Config: the group itself, chosen with model=NAME
    return keys


def group_options(group: str) -> list[str]:
    """The options of a config group: conf/<group>/<option>.yaml."""
    from vaebench.cli import conf_dir

    return sorted(p.stem for p in (Path(conf_dir()) / group).glob("*.yaml"))


def closest(word: str, choices: Iterable[str]) -> Optional[str]:
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


def fix_for(message: str) -> Optional[str]:
    """The hint for a one-line composition error; None when there is nothing better to say than the error."""
    unknown = re.search(r"Could not (?:override|append to) '([\w.]+)'|Key '([\w]+)' (?:not in|is not in struct)", message)
    if unknown:
        typed = re.search(r"Could not (?:override|append to) '([\w.]+)'", message)
        key = typed.group(1) if typed else unknown.group(2)
        return unknown_key_fix(key)
    missing = re.search(r"Could not (?:find|load) '([\w/]+)/([^'/]+)'", message)
    if missing:
        group, option = missing.groups()
        if group.startswith("hydra/"):
            return plugin_fix(group, option)
        meant = closest(option, group_options(group))
        if meant:
            return f"did you mean {group}={meant}?"
        return None if "Available options" in message else f"{group} is one of {', '.join(group_options(group))}"
    value = re.search(r"Error merging override ([\w.]+)=(.*?); Value '.*?' (?:of type '\w+' )?(?:could not be converted "
                      r"to (\w+)|is not a valid (bool))", message)
    if value:
        key, _, typ, boolean = value.groups()
        form = VALUE_FORMS.get(typ or boolean)
        return f"{key} takes {form.format(key=key)}" if form else None
    choice = re.search(r"Error merging override ([\w.]+)=(.*?); Invalid value '.*?', expected one of \[(.*?)\]", message)
    if choice:
        key, given, allowed = choice.groups()
        options = [o.strip() for o in allowed.split(",")]
        meant = closest(given, options)
        return (f"did you mean {key}={meant}?" if meant else f"{key} is one of {', '.join(options)}")
    return None


def with_fix(message: str) -> str:
    """A composition error's one line, and what to type instead: "...: did you mean latent_dim?"."""
    fix = fix_for(message)
    return f"{message}: {fix}" if fix else message


def unknown_key_fix(key: str) -> str:
    keys = schema_keys()
    meant = closest(key, keys)
    if meant is None and "." not in key:  # a nested key typed without its group: max_epochs for trainer.max_epochs
        leaf = {k.rsplit(".", 1)[-1]: k for k in keys}
        meant = leaf.get(key) or (leaf.get(closest(key, leaf)) if closest(key, leaf) else None)
    if meant is None:
        return "vaebench --cfg job lists every key"
    only = sorted(set(keys[meant]))
    if meant == key and only:  # right key, wrong option: optimizer.momentum under adam
        return f"{key} is a setting of {' and '.join(only)} only: choose one, e.g. {only[0]} {key}=..."
    return f"did you mean {meant}?" + (f" ({' and '.join(only)} only)" if only else "")


# Launchers and sweepers from plugins vaebench's extras install: the error then names the install, not Hydra's
# "Could not load".
PLUGINS = {("hydra/launcher", "slurm"): "cluster", ("hydra/launcher", "slurm_cpu"): "cluster",
           ("hydra/launcher", "local"): "cluster", ("hydra/launcher", "submitit_slurm"): "cluster",
           ("hydra/launcher", "submitit_local"): "cluster", ("hydra/sweeper", "optuna"): "optuna"}


def plugin_fix(group: str, option: str) -> Optional[str]:
    extra = PLUGINS.get((group, option))
    if extra:
        return f'{group}={option} needs its Hydra plugin: pip install -e ".[{extra}]" (from the clone)'
    return None
