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
        self.file, self.line, self.key_path, self.message = str(file), line, key_path, message


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


MAX_FILE_BYTES = 4 << 20  # a design or sweep file is a few KiB; anything above 4 MiB is refused unread
MAX_ALIASES = 64  # aliases (*name) in one file
MAX_NODES = 100_000  # values in the document with every alias expanded (no "billion laughs")
MAX_DEPTH = 64  # nesting of mappings and lists


def _strict_loader(file: str | Path) -> type[yaml.SafeLoader]:
    class StrictLoader(yaml.SafeLoader):
        def __init__(self, stream):
            super().__init__(stream)
            self.path: list[str] = []  # the key path of the value being constructed, e.g. ["compute", "units"]
            self.aliases = 0
            self.depth = 0  # nesting of the node being composed

        def _key_path(self, key: str = "") -> str:
            text = ""
            for step in [*self.path, key] if key else self.path:
                text = text + step if step.startswith("[") or not text else f"{text}.{step}"
            return text

        def compose_document(self):
            node = super().compose_document()
            _check_expansion(file, node)
            return node

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    mark = self.peek_event().start_mark
                    raise ConfigError(file, mark.line + 1, "", f"more than {MAX_ALIASES} aliases (*name); write the "
                                                               "values out")
            if self.depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(file, mark.line + 1, "", f"nested deeper than {MAX_DEPTH} levels")
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_object(self, node, deep=False):
            try:
                return super().construct_object(node, deep)
            except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # a bad !!int, !!timestamp, ...
                tag = node.tag.rsplit(":", 1)[-1]
                raise ConfigError(file, node.start_mark.line + 1, self._key_path(),
                                  f"cannot read this {tag} value ({exc})") from None

        def construct_sequence(self, node, deep=False):
            items = []
            for index, child in enumerate(node.value):
                self.path.append(f"[{index}]")
                try:
                    items.append(self.construct_object(child, deep=True))
                finally:
                    self.path.pop()
            return items

        def construct_mapping(self, node, deep=False):
            mapping = LinedDict(line=node.start_mark.line + 1)
            for key_node, value_node in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str):
                    raise ConfigError(file, key_node.start_mark.line + 1, self._key_path(str(key)),
                                      "keys must be strings")
                if key in mapping:
                    raise ConfigError(file, key_node.start_mark.line + 1, self._key_path(key),
                                      f"duplicate key (first defined on line {mapping.lines[key]})")
                self.path.append(key)
                try:
                    value = self.construct_object(value_node, deep=True)
                finally:
                    self.path.pop()
                if isinstance(value, LinedDict):
                    value.line = key_node.start_mark.line + 1  # a section "starts" at its key
                mapping[key] = value
                mapping.lines[key] = key_node.start_mark.line + 1
            return mapping

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, StrictLoader.construct_mapping)
    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, StrictLoader.construct_sequence)
    # YAML 1.1 reads 8:16 as the base-60 number 496 and 1e9 as a string; resolve numbers as YAML 1.2 does.
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(_INT_TAG, _INT_12, list("-+0123456789"))
    StrictLoader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_12, list("-+0123456789."))
    return StrictLoader


def _check_expansion(file: str | Path, root) -> None:
    """Refuse a document that nests deeper than MAX_DEPTH, refers to itself, or holds more than MAX_NODES values
    once its aliases are expanded, counting each shared node once per use without expanding it."""
    if root is None:
        return
    sizes: dict[int, int] = {}  # id(node) → values under it, expanded
    stack = [(root, 1, False)]
    open_nodes: set[int] = set()
    while stack:
        node, depth, done = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        if done:
            open_nodes.discard(id(node))
            children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_NODES:
                raise ConfigError(file, node.start_mark.line + 1, "",
                                  f"more than {MAX_NODES:,} values once aliases are expanded; write the values out")
            continue
        if id(node) in sizes:
            continue
        if id(node) in open_nodes:
            raise ConfigError(file, node.start_mark.line + 1, "", "an alias refers to the value that holds it")
        if depth > MAX_DEPTH:
            raise ConfigError(file, node.start_mark.line + 1, "", f"nested deeper than {MAX_DEPTH} levels")
        open_nodes.add(id(node))
        stack.append((node, depth, True))
        children = [c for pair in node.value for c in pair] if isinstance(node, yaml.MappingNode) else node.value
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)


def load_yaml(path: str | Path):
    """Parse ``path`` strictly; a file above MAX_FILE_BYTES, syntax errors, characters YAML does not allow,
    duplicate keys and alias bombs raise :class:`ConfigError`."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(path, None, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, None, "", f"cannot read the file ({exc})") from None
    if len(raw) > MAX_FILE_BYTES:
        size = path.stat().st_size if path.is_file() else len(raw)
        raise ConfigError(path, None, "", f"the file is {size:,} bytes; design and sweep files are limited to "
                                          f"{MAX_FILE_BYTES:,} bytes ({MAX_FILE_BYTES >> 20} MiB)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(path, line, "", f"not UTF-8 text (byte {raw[exc.start]:#04x} at offset {exc.start})") \
            from None
    try:
        return yaml.load(text, Loader=_strict_loader(path))  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise ConfigError(path, mark.line + 1 if mark else None, "", f"YAML syntax: {exc.problem}") from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other control characters)
        line = text[:exc.position].count("\n") + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError(path, line, "", f"character U+{code:04X} is not allowed in YAML (only printable text, "
                                          "tabs and line breaks)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, "", f"YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(path, None, "", f"nested deeper than {MAX_DEPTH} levels") from None


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
