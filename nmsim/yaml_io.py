"""Strict YAML for accelerator descriptions: duplicate keys are errors and every error names file, line and key path.

``load_yaml`` returns plain Python values whose mappings are :class:`LinedDict` (a dict that remembers the line
of each key); ``check_keys`` rejects unknown keys and reports missing required ones, suggesting the closest
allowed name. Schema-level checks (types, units, ranges) build on these two. Numbers follow YAML 1.2, so
``8:16`` stays the string "8:16" (YAML 1.1 would read the base-60 number 496) and ``1e9`` is a float.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import yaml

from nmsim.errors import NmsimError


class ConfigError(NmsimError):
    """A problem in a YAML file: ``<file>:<line>: <key path>: <what is wrong and what is allowed>``."""

    def __init__(self, file: str | Path, line: int | None, key_path: str, message: str):
        where = f"{file}:{line}" if line is not None else str(file)
        super().__init__(f"{where}: {key_path or '<top level>'}: {message}")
        self.file, self.line, self.key_path = str(file), line, key_path


class LinedDict(dict):
    """A mapping from YAML that remembers the 1-based line of each key (``lines``) and of itself (``line``: the
    line of the key that holds it, or of its first key at the top level)."""

    def __init__(self, *args, line: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.line = line
        self.lines: dict[str, int] = {}


_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_INT_12 = re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$|^0x[0-9a-fA-F_]+$|^0o[0-7_]+$")
_FLOAT_12 = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$|^[-+]?[0-9][0-9_]*\.(?:[eE][-+]?[0-9]+)?$"
    r"|^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
)


def _strict_loader(file: str | Path) -> type[yaml.SafeLoader]:
    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            mapping = LinedDict(line=node.start_mark.line + 1)
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise ConfigError(file, key_node.start_mark.line + 1, str(key), "keys must be strings")
                if key in mapping:
                    raise ConfigError(file, key_node.start_mark.line + 1, key,
                                      f"duplicate key (first defined on line {mapping.lines[key]})")
                value = self.construct_object(value_node, deep=True)
                if isinstance(value, LinedDict):
                    value.line = key_node.start_mark.line + 1  # a section "starts" at its key
                mapping[key] = value
                mapping.lines[key] = key_node.start_mark.line + 1
            return mapping

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping)
    # YAML 1.1 reads 8:16 as the base-60 number 496 and 1e9 as a string; resolve numbers as YAML 1.2 does.
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(_INT_TAG, _INT_12, list("-+0123456789"))
    StrictLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))
    return StrictLoader


def load_yaml(path: str | Path):
    """Parse ``path`` strictly; syntax errors and duplicate keys raise :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, None, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "", f"cannot read the file ({exc})") from None
    try:
        return yaml.load(text, Loader=_strict_loader(path))  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(path, mark.line + 1 if mark else None, "", f"YAML syntax: {exc.problem}") from None


def check_keys(
    mapping: LinedDict, file: str | Path, key_path: str, allowed: set[str], required: set[str] = frozenset()
) -> None:
    """Reject keys outside ``allowed`` (suggesting the nearest) and report a missing ``required`` key."""
    for key in mapping:
        if key not in allowed:
            near = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(file, mapping.lines.get(key), _join(key_path, key),
                              f"unknown key{hint} Allowed here: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(mapping))
    if missing:
        raise ConfigError(file, mapping.line, key_path, f"missing required key(s): {', '.join(missing)}")


def _join(key_path: str, key: str) -> str:
    return f"{key_path}.{key}" if key_path else key
