"""Loading definitions from YAML: hostile input refused, every error with file:line:col.

PyYAML by itself accepts duplicate keys, expands alias bombs when anything walks the result,
raises RecursionError on deep nesting and applies YAML 1.1 typing (`NO` -> False, `1:30` ->
90). This loader reads with PyYAML's scanner, parser and composer only, then builds the data
itself from the node graph:

- YAML 1.2 core schema: only `true`/`false` are booleans, `0777` is 777, `1:30` is a string;
- only the core tags (str, int, float, bool, null, map, seq); `!!python/...` and every other
  tag is refused, as are merge keys (`<<`);
- bounds, each checked before anything is expanded: file size, documents per file, nesting
  depth, alias count, and the size the aliases expand to; cycles are refused;
- duplicate keys, non-text keys, over-long keys, non-finite numbers and over-long integers
  are refused; non-UTF-8 input and a byte order mark inside the text too;
- non-printable characters anywhere in the file (a pasted `ESC[31m`, DEL, C1 controls, NEL,
  U+2028, bidi overrides, U+FFFE) are refused with their position and code point, before
  PyYAML's reader sees them (it raises for some and takes others for line breaks).

Every problem is reported (not only the first) as `file:line:col: path: message`, with the
path in the definition (`spec.levels[1].after`) mapped back to the YAML node's position.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

from definitions.common import IDENTIFIER_PATTERN, NAME_PATTERN, TEMPLATE_NAME_PATTERN
from definitions.conditions import ConditionError
from definitions.directory import KINDS
from definitions.models import API_VERSION, DEFINITION_MODELS, AnyDefinition

MAX_FILE_BYTES = 1_000_000
MAX_DOCUMENTS = 100
MAX_DEPTH = 24
"""Definitions need fewer than 15 levels; PyYAML recurses once per level."""
MAX_ALIASES = 100
MAX_EXPANDED_NODES = 50_000
"""Nodes one document may have once aliases are expanded (stops billion laughs)."""
MAX_EXPANDED_CHARS = 2_000_000
"""Characters of scalars one document may have once aliases are expanded."""
MAX_KEY_CHARS = 200
MAX_INT_DIGITS = 30
YAML_SUFFIXES = (".yaml", ".yml")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class _CoreResolver(BaseResolver):
    """YAML 1.2 core schema resolution (https://yaml.org/spec/1.2.2/#1032-tag-resolution)."""


_CoreResolver.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreResolver.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_CoreResolver.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)
_CoreResolver.add_implicit_resolver(
    _NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


class _NodeLoader(Reader, Scanner, Parser, Composer, _CoreResolver):
    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _CoreResolver.__init__(self)


# --- problems ------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"

    @property
    def located(self) -> str:
        """The problem without the file name: `line:col: path: message`."""
        return str(self)[len(self.file) + 1 :]


class _Refused(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


def _short_tag(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _at(mark: Any, message: str) -> _Refused:
    return _Refused(mark.line + 1, mark.column + 1, message)


PathKey = tuple[str | int, ...]


def format_path(path: Iterable[str | int]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass
class SourceDocument:
    """One YAML document: its plain data and where each of its nodes sits in the file."""

    file: str
    index: int
    data: Any
    value_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    inline_starts: dict[PathKey, int] = field(default_factory=dict)
    """For one-line scalars: the column where the text itself starts (after a quote)."""

    def problem(self, path: PathKey, message: str, *, at_key: bool = False) -> Problem:
        """A problem at `path`, or at its nearest ancestor that has a position."""
        marks = self.key_marks if at_key and path in self.key_marks else self.value_marks
        probe = path
        while probe and probe not in marks:
            probe = probe[:-1]
        line, column = marks.get(probe, self.value_marks.get((), (1, 1)))
        return Problem(self.file, line, column, format_path(path), message)

    def content_hash(self) -> str:
        return content_hash(self.data)


def content_hash(data: Any) -> str:
    """SHA-256 of the document's canonical JSON: key order and YAML layout do not count."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- reading and composing -----------------------------------------------------------------


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _Refused(1, 1, "the file is UTF-16; save it as UTF-8")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        raise _Refused(
            line, column, f"not valid UTF-8 (byte 0x{raw[exc.start]:02X}); save the file as UTF-8"
        ) from None
    inner_bom = text.find("\ufeff")
    if inner_bom >= 0:
        line = text.count("\n", 0, inner_bom) + 1
        column = inner_bom - (text.rfind("\n", 0, inner_bom) + 1) + 1
        raise _Refused(line, column, "a byte order mark (U+FEFF) inside the file; remove it")
    return text


# What YAML itself forbids (https://yaml.org/spec/1.2.2/#51-character-set: C0 controls other
# than tab/LF/CR, DEL, C1 controls other than NEL, surrogates, U+FFFE/U+FFFF), plus the
# characters that change what a reviewer sees or where a line ends: NEL, U+2028/U+2029 (PyYAML
# breaks lines there, no editor does) and the bidi marks, overrides and isolates (U+202E shows
# "exe.txt" as "txt.exe"). The text fields refuse the same ones (definitions.common).
_NON_PRINTABLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
    "\u2066-\u2069\ud800-\udfff\ufffe\uffff]"
)
_C0_NAMES = (
    *("NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT"),
    *("FF", "CR", "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB"),
    *("CAN", "EM", "SUB", "ESC", "FS", "GS", "RS", "US"),
)
MAX_CHARACTER_PROBLEMS = 20


def _character_name(character: str) -> str:
    code = ord(character)
    if code < 0x20:
        return _C0_NAMES[code]
    if code == 0x7F:
        return "DEL"
    if 0x80 <= code <= 0x9F:
        return "NEL, a C1 control" if code == 0x85 else "a C1 control"
    if code in (0xFFFE, 0xFFFF):
        return "a noncharacter"
    return unicodedata.name(character, "a surrogate")


def _non_printable(text: str) -> list[_Refused]:
    """Each non-printable character (up to a bound) at its line and column, counted in
    characters the way editors and PyYAML's marks count them."""
    found: list[_Refused] = []
    for match in _NON_PRINTABLE.finditer(text):
        if len(found) == MAX_CHARACTER_PROBLEMS:
            break
        at = match.start()
        line = text.count("\n", 0, at) + 1
        column = at - (text.rfind("\n", 0, at) + 1) + 1
        character = match.group()
        hint = " (a pasted terminal colour code?)" if character == "\x1b" else ""
        found.append(
            _Refused(
                line,
                column,
                f"the non-printable character U+{ord(character):04X} "
                f"({_character_name(character)}){hint}; remove it or write it as an escape",
            )
        )
    return found


def _yaml_refusal(exc: yaml.YAMLError) -> _Refused:
    if isinstance(exc, yaml.reader.ReaderError):  # no mark, only a position in the text
        return _Refused(1, 1, f"YAML error: {' '.join(str(exc).split())[:200]}")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if problem == "second occurrence" and context and context_mark is not None:
        # ComposerError for a duplicate anchor puts the real message in `context`.
        message = f"{context.split(';')[0]} (first at line {context_mark.line + 1})"
    elif context and "key" not in problem:
        message = f"{context}: {problem}"
    else:
        message = problem
    if "could not find expected ':'" in message or "mapping values are not allowed" in message:
        message += " (a key longer than 1024 characters, or a missing ':')"
    message = " ".join(message.split())
    if mark is None:
        return _Refused(1, 1, f"YAML error: {message}")
    return _at(mark, f"YAML error: {message}")


def _new_loader(text: str) -> _NodeLoader:
    try:
        return _NodeLoader(text)  # PyYAML's Reader checks the characters here
    except yaml.YAMLError as exc:
        raise _yaml_refusal(exc) from None


def _check_events(text: str) -> None:
    """Walk the event stream (no recursion) to bound documents, depth and aliases."""
    loader = _new_loader(text)
    depth = documents = aliases = 0
    try:
        while not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > MAX_DOCUMENTS:
                    raise _at(event.start_mark, f"more than {MAX_DOCUMENTS} documents in one file")
            elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _at(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
            elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                depth -= 1
            elif isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise _at(event.start_mark, f"more than {MAX_ALIASES} aliases in one file")
    except yaml.YAMLError as exc:
        raise _yaml_refusal(exc) from None
    except RecursionError:
        raise _Refused(loader.line + 1, loader.column + 1, "nesting too deep") from None
    finally:
        loader.dispose()


def _compose(text: str) -> list[Node]:
    loader = _new_loader(text)
    nodes: list[Node] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                nodes.append(node)
    except yaml.YAMLError as exc:
        raise _yaml_refusal(exc) from None
    except RecursionError:
        raise _Refused(loader.line + 1, loader.column + 1, "nesting too deep") from None
    finally:
        loader.dispose()
    return nodes


@dataclass
class _Builder:
    """Turns one composed node graph into plain data, recording positions and bounds."""

    document: SourceDocument
    nodes_left: int = MAX_EXPANDED_NODES
    chars_left: int = MAX_EXPANDED_CHARS
    active: set[int] = field(default_factory=set)

    def build(self, node: Node, path: PathKey) -> Any:
        self.nodes_left -= 1
        if self.nodes_left < 0:
            raise _at(node.start_mark, "aliases expand this document too far (an alias bomb?)")
        if id(node) in self.active:
            raise _at(node.start_mark, "an alias refers to a node that contains it (a cycle)")
        self.document.value_marks.setdefault(
            path, (node.start_mark.line + 1, node.start_mark.column + 1)
        )
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                if node.tag != _SEQ:
                    raise _at(node.start_mark, f"the tag {_short_tag(node.tag)} is not allowed")
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise _at(node.start_mark, "unexpected YAML node")

    def _mapping(self, node: MappingNode, path: PathKey) -> dict[str, Any]:
        if node.tag != _MAP:
            raise _at(node.start_mark, f"the tag {_short_tag(node.tag)} is not allowed")
        result: dict[str, Any] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _at(
                    key_node.start_mark, "merge keys (<<) are not supported; write the fields out"
                )
            if not isinstance(key_node, ScalarNode):
                raise _at(key_node.start_mark, "a key must be a plain name, not a list or mapping")
            if key_node.tag != _STR:
                raise _at(
                    key_node.start_mark,
                    f"the key {key_node.value[:40]!r} must be text; quote it",
                )
            key = key_node.value
            if len(key) > MAX_KEY_CHARS:
                raise _at(
                    key_node.start_mark,
                    f"a key of {len(key)} characters; the limit is {MAX_KEY_CHARS}",
                )
            if key in result:
                raise _at(
                    key_node.start_mark,
                    f"duplicate key {key!r} (first at line {first_lines[key]})",
                )
            first_lines[key] = key_node.start_mark.line + 1
            child = (*path, key)
            self.document.key_marks[child] = (
                key_node.start_mark.line + 1,
                key_node.start_mark.column + 1,
            )
            result[key] = self.build(value_node, child)
        return result

    def _scalar(self, node: ScalarNode, path: PathKey) -> Any:
        text: str = node.value
        self.chars_left -= len(text)
        if self.chars_left < 0:
            raise _at(node.start_mark, "aliases expand this document too far (an alias bomb?)")
        if node.start_mark.line == node.end_mark.line:
            quoted = 1 if node.style in ("'", '"') else 0
            self.document.inline_starts[path] = node.start_mark.column + 1 + quoted
        tag = node.tag
        if tag == _STR:
            return text
        if tag == _NULL:
            if text not in ("", "~", "null", "Null", "NULL"):
                raise _at(node.start_mark, f"{text[:40]!r} is not null")
            return None
        if tag == _BOOL:
            if text.lower() not in ("true", "false"):
                raise _at(node.start_mark, f"{text[:40]!r} is not true or false")
            return text.lower() == "true"
        if tag == _INT:
            digits = text.lstrip("+-")
            if len(digits) > MAX_INT_DIGITS:
                raise _at(node.start_mark, f"a number of {len(digits)} digits is too large")
            try:
                return int(text, 0) if digits.startswith(("0o", "0x")) else int(text, 10)
            except ValueError:
                raise _at(node.start_mark, f"{text[:40]!r} is not an integer") from None
        if tag == _FLOAT:
            try:
                number = float(text)
            except ValueError:
                raise _at(node.start_mark, f"{text[:40]!r} is not a number") from None
            if not math.isfinite(number):
                raise _at(
                    node.start_mark, f"{text[:40]!r}: infinite numbers and NaN are not allowed"
                )
            return number
        raise _at(node.start_mark, f"the tag {_short_tag(tag)} is not allowed")


def read_documents(raw: bytes, file: str) -> tuple[list[SourceDocument], list[Problem]]:
    """The documents in `raw`, or the problems that refuse them (never raises)."""
    try:
        return _read_documents(raw, file)
    except Exception as exc:  # the promise: a problem to report, never a traceback
        reason = " ".join(str(exc).split())[:160]
        return [], [
            Problem(file, 1, 1, "", f"cannot read this file ({type(exc).__name__}: {reason})")
        ]


def _read_documents(raw: bytes, file: str) -> tuple[list[SourceDocument], list[Problem]]:
    if len(raw) > MAX_FILE_BYTES:
        return [], [Problem(file, 1, 1, "", f"the file is over {MAX_FILE_BYTES} bytes")]
    try:
        text = _decode(raw)
        refusals = _non_printable(text)
        if refusals:
            return [], [Problem(file, r.line, r.column, "", r.message) for r in refusals]
        _check_events(text)
        nodes = _compose(text)
    except _Refused as refused:
        return [], [Problem(file, refused.line, refused.column, "", refused.message)]
    except (RecursionError, MemoryError):
        return [], [Problem(file, 1, 1, "", "the file is too large or deep")]
    documents: list[SourceDocument] = []
    problems: list[Problem] = []
    for index, node in enumerate(nodes):
        document = SourceDocument(file, index, None)
        try:
            document.data = _Builder(document).build(node, ())
        except _Refused as refused:
            problems.append(Problem(file, refused.line, refused.column, "", refused.message))
            continue
        except (RecursionError, MemoryError):
            line, column = node.start_mark.line + 1, node.start_mark.column + 1
            problems.append(Problem(file, line, column, "", "the document is too large or deep"))
            continue
        if document.data is None:
            continue  # an empty document (`---` alone) holds nothing to load
        documents.append(document)
    if not documents and not problems:
        problems.append(Problem(file, 1, 1, "", "no definition in this file"))
    return documents, problems


# --- validation ----------------------------------------------------------------------------


@dataclass
class LoadedDefinition:
    source: SourceDocument
    definition: AnyDefinition

    @property
    def name(self) -> str:
        return self.definition.metadata.name

    @property
    def kind(self) -> str:
        return self.definition.kind

    @property
    def content_hash(self) -> str:
        return self.source.content_hash()


_PATTERN_HINTS = {
    NAME_PATTERN: "use lower-case letters, digits and '-', 2 to 63 long, starting with a letter",
    TEMPLATE_NAME_PATTERN: "a template name: lower-case letters, digits, '-' and '_'",
    IDENTIFIER_PATTERN: "an id: lower-case letters, digits and - _ . : @ +",
}


def _clean_message(error: Any) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "union_tag_not_found":
        message = f"missing {str(ctx['discriminator']).strip(chr(39))}"
    elif kind == "union_tag_invalid":
        message = (
            f"unknown {str(ctx['discriminator']).strip(chr(39))} {str(ctx['tag'])[:40]!r}: "
            f"use one of {str(ctx['expected_tags']).replace(chr(39), '')}"
        )
    elif kind == "string_pattern_mismatch" and ctx.get("pattern") in _PATTERN_HINTS:
        message = _PATTERN_HINTS[ctx["pattern"]]
    elif kind == "string_type" and isinstance(error.get("input"), bool):
        message = f"must be text, not {str(error['input']).lower()}; quote it"
    elif kind == "extra_forbidden":
        message = "unknown field"
    return message


def _locate(document: SourceDocument, error: Any) -> Problem:
    """Map a pydantic error location to the YAML position of the field it names."""
    matched: PathKey = ()
    trailing: list[str | int] = []
    for part in error["loc"]:
        candidate = (*matched, part)
        if candidate in document.value_marks:
            matched, trailing = candidate, []
        elif isinstance(part, int) or not any(c in str(part) for c in "[]-,"):
            trailing.append(part)
    # Tags pydantic adds inside discriminated unions ('notify') never name YAML keys.
    if trailing and error["type"] != "missing" and error["type"] != "extra_forbidden":
        trailing = []
    path = (*matched, *trailing)
    message = _clean_message(error)
    at_key = error["type"] == "extra_forbidden"
    problem = document.problem(path, message, at_key=at_key)
    failure = (error.get("ctx") or {}).get("error")
    if isinstance(failure, ConditionError) and failure.column is not None:
        start = document.inline_starts.get(matched)
        if start is not None:
            problem = Problem(
                problem.file, problem.line, start + failure.column - 1, problem.path, message
            )
    return problem


def validate_document(document: SourceDocument) -> tuple[LoadedDefinition | None, list[Problem]]:
    data = document.data
    if not isinstance(data, dict):
        return None, [
            document.problem(
                (), "a definition is a mapping with apiVersion, kind, metadata and spec"
            )
        ]
    problems: list[Problem] = []
    if data.get("apiVersion") != API_VERSION:
        where = ("apiVersion",) if "apiVersion" in data else ()
        problems.append(document.problem(where, f"apiVersion must be {API_VERSION}"))
    kind = data.get("kind")
    if kind not in KINDS:
        where = ("kind",) if "kind" in data else ()
        problems.append(document.problem(where, f"kind must be one of {', '.join(KINDS)}"))
        return None, problems
    model = DEFINITION_MODELS[kind]
    try:
        definition = model.model_validate(data)
    except ValidationError as exc:
        located = [_locate(document, error) for error in exc.errors(include_url=False)]
        if problems:  # the apiVersion problem is reported once, by us
            located = [p for p in located if p.path != "apiVersion"]
        return None, sorted(set(problems + located))
    if problems:
        return None, problems
    return LoadedDefinition(document, definition), []  # type: ignore[arg-type]


@dataclass
class LoadResult:
    definitions: list[LoadedDefinition] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    """Name -> kind of each document the schema refused that still names itself and a known
    kind: lint resolves references to it, so fixing it is not also reported elsewhere as
    "no definition named ..." in the same run."""


def _named_kind(data: Any) -> tuple[str, str] | None:
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    metadata = data.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return (name, data["kind"]) if isinstance(name, str) and name else None


def definition_files(paths: Iterable[Path]) -> Iterator[Path]:
    """YAML files under `paths` (folders searched recursively), in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()
            )
        else:
            yield path


def load_file(path: Path, display: str | None = None) -> LoadResult:
    name = display or str(path)
    result = LoadResult(files=1)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        result.problems.append(Problem(name, 1, 1, "", f"cannot read: {exc.strerror or exc}"))
        return result
    documents, problems = read_documents(raw, name)
    result.problems.extend(problems)
    for document in documents:
        loaded, document_problems = validate_document(document)
        result.problems.extend(document_problems)
        if loaded is not None:
            result.definitions.append(loaded)
        elif (named := _named_kind(document.data)) is not None:
            result.refused.setdefault(*named)
    return result


def load_paths(paths: Iterable[Path]) -> LoadResult:
    """Every definition under `paths`, with every problem found; names must be unique."""
    total = LoadResult()
    seen: dict[str, LoadedDefinition] = {}
    for file in definition_files(paths):
        result = load_file(file)
        total.files += 1
        total.problems.extend(result.problems)
        for name, kind in result.refused.items():
            total.refused.setdefault(name, kind)
        for loaded in result.definitions:
            first = seen.get(loaded.name)
            if first is not None:
                line = first.source.value_marks.get(("metadata", "name"), (1, 1))[0]
                where = (
                    f"line {line}"
                    if first.source.file == loaded.source.file
                    else f"{first.source.file}:{line}"
                )
                total.problems.append(
                    loaded.source.problem(
                        ("metadata", "name"), f"{loaded.name!r} is also defined at {where}"
                    )
                )
                continue
            seen[loaded.name] = loaded
            total.definitions.append(loaded)
    return total
