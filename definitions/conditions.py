"""Conditions: CEL expressions (cel-python), checked when a definition loads, evaluated purely.

Each place a condition appears declares the variables it may read (`ticket` and `customer`
in an escalation's match, `event`, `customer` and `history` in a recovery trigger, ...).
Loading compiles the expression and refuses a syntax error or an unknown variable, naming
its column. cel-python has no cost limit and raises RecursionError on deep nesting, so
expressions over a length, nesting or comprehension bound are refused at load time too.

`evaluate` is pure (no I/O, no clock) and caches compiled programs, so workflow code may
call it. Note: creating a `celpy.Environment` sets the process recursion limit to 2500;
it is created once, lazily, and shared.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import celpy
import lark
from celpy import celparser, celtypes
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import CELEvalError
from pydantic import AfterValidator, WithJsonSchema

MAX_CONDITION_CHARS = 1_000
MAX_NESTING = 12
"""Brackets and parentheses inside each other; cel-python recurses once per level."""
MAX_TREE_DEPTH = 160
"""Depth of the parse tree: long operator chains nest as deeply as brackets do."""
MAX_COMPREHENSION_NESTING = 2
"""`all`/`exists`/`map`/`filter` inside each other: each level multiplies the cost."""

_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

# The variables each place offers (see definitions/README.md for their fields).
ESCALATION_MATCH = ("ticket", "customer")
RECOVERY_TRIGGER = ("event", "customer", "history")
RECOVERY_DEDUP = ("event", "customer")
ROLLOUT_COHORT = ("customer",)
HANDOFF_ROUTE = ("conversation", "customer")


class ConditionError(ValueError):
    """A condition that cannot be compiled or evaluated; `column` is 1-based when known."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.message = message
        self.column = column
        where = f" (column {column} of the expression)" if column is not None else ""
        super().__init__(f"{message}{where}")


_ENVIRONMENT_LOCK = threading.Lock()


@functools.cache
def _environment() -> celpy.Environment:
    # Workflow activations run on a thread pool: without the lock, a worker's first burst
    # built the CEL grammar once per thread at the same time, each past the SDK's 2 s
    # deadlock detection.
    with _ENVIRONMENT_LOCK:
        _load_cached_parser()
        return celpy.Environment()


def parser_cache_path() -> Path | None:
    """Where the CEL parser's tables are kept between processes: the user's cache folder
    (never a shared temp folder: lark reads the file back with pickle). None when there is
    no such folder to write."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "opsflow"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"cel-parser-{lark.__version__}.lark"


def _load_cached_parser() -> None:
    """Build cel-python's parser as it does (celpy/celparser.py, `CELParser.__init__`), but
    with lark's cache: building the LALR tables costs every command and process that reads a
    definition about 0.15 s; loading them, about 0.01 s. lark checks the cached file against
    a hash of the grammar, the options and its own version, and rebuilds when they differ."""
    if CELParser.CEL_PARSER is not None:
        return
    grammar = (Path(celparser.__file__).parent / "cel.lark").read_text()

    def build(cache: Path | None) -> lark.Lark:
        return lark.Lark(
            grammar,
            parser="lalr",
            start="expr",
            debug=True,
            g_regex_flags=re.M,
            lexer_callbacks={"IDENT": CELParser.ambiguous_literals},
            propagate_positions=True,
            maybe_placeholders=False,
            priority="invert",
            tree_class=lark.Tree,
            cache=str(cache) if cache is not None else False,
        )

    try:
        CELParser.CEL_PARSER = build(parser_cache_path())
    except Exception:  # no file access here (a workflow's sandbox refuses `open`): build it
        CELParser.CEL_PARSER = build(None)


def warm_up() -> None:
    """Build the CEL parser now (about a second of CPU) rather than in a workflow's first
    activation, where it counts against the SDK's deadlock detection."""
    _environment()


def _bracket_nesting(expression: str) -> tuple[int, int]:
    """Deepest bracket nesting outside string literals, and the column where it is reached."""
    depth = deepest = 0
    column = 1
    quote: str | None = None
    escaped = False
    for index, char in enumerate(expression, start=1):
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
            if depth > deepest:
                deepest, column = depth, index
        elif char in ")]}":
            depth = max(depth - 1, 0)
    return deepest, column


def _tree_depth(tree: Any) -> int:
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node.children if hasattr(child, "data"))
    return deepest


def _macro_name(node: Any) -> str | None:
    if node.data == "member_dot_arg":
        for child in node.children:
            if not hasattr(child, "data"):
                return str(child)
    return None


def _check_identifiers(tree: Any, variables: Iterable[str]) -> None:
    """Refuse unknown variables and comprehensions nested too deeply."""
    known = set(variables)
    bound: set[str] = set()
    identifiers: list[Any] = []
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        node, macros = stack.pop()
        name = _macro_name(node)
        if name in _MACROS:
            macros += 1
            if macros > MAX_COMPREHENSION_NESTING:
                raise ConditionError(
                    f"comprehensions ({', '.join(sorted(_MACROS))}) nest more than "
                    f"{MAX_COMPREHENSION_NESTING} deep",
                )
            exprlist = next(c for c in node.children if getattr(c, "data", "") == "exprlist")
            first = exprlist.children[0] if exprlist.children else None
            tokens = [t for t in first.scan_values(lambda _: True)] if first is not None else []
            if len(tokens) == 1:
                bound.add(str(tokens[0]))
        if node.data in ("ident", "dot_ident"):
            identifiers.extend(c for c in node.children if not hasattr(c, "data"))
        stack.extend((child, macros) for child in node.children if hasattr(child, "data"))
    for token in sorted(identifiers, key=lambda t: getattr(t, "column", 0) or 0):
        name = str(token)
        if name not in known and name not in bound:
            offered = ", ".join(sorted(known)) or "none"
            raise ConditionError(
                f"unknown variable {name[:40]!r}; the variables here are {offered}",
                getattr(token, "column", None),
            )


def _describe_syntax_error(expression: str, column: int | None) -> str:
    if column is None or column > len(expression.rstrip()):
        return "syntax error: the expression ends too early"
    return f"syntax error at {expression[column - 1 : column + 11]!r}"


@functools.lru_cache(maxsize=1_024)
def _compile(expression: str) -> Any:
    if not expression.strip():
        raise ConditionError("the condition is empty")
    if len(expression) > MAX_CONDITION_CHARS:
        raise ConditionError(f"the condition is over {MAX_CONDITION_CHARS} characters")
    nesting, column = _bracket_nesting(expression)
    if nesting > MAX_NESTING:
        raise ConditionError(f"brackets nest {nesting} deep; the limit is {MAX_NESTING}", column)
    try:
        tree = _environment().compile(expression)
    except CELParseError as exc:
        raise ConditionError(_describe_syntax_error(expression, exc.column), exc.column) from None
    except RecursionError:
        raise ConditionError("the condition is too complex (nests too deeply)") from None
    except Exception as exc:  # cel-python raises plain errors for some malformed input
        raise ConditionError(f"cannot compile: {type(exc).__name__}: {str(exc)[:120]}") from None
    if _tree_depth(tree) > MAX_TREE_DEPTH:
        raise ConditionError("the condition is too complex: split long chains of operators")
    return tree


def check_condition(expression: str, variables: Iterable[str]) -> str:
    """`expression` if it compiles and reads only `variables`; ConditionError otherwise."""
    tree = _compile(expression)
    _check_identifiers(tree, variables)
    return expression


def selected_fields(expression: str, variable: str) -> list[tuple[str, int | None]]:
    """The fields `expression` selects directly on `variable` (`event.score` -> score), with
    their columns; an expression that does not compile selects nothing."""
    try:
        tree = _compile(expression)
    except ConditionError:
        return []
    found: list[tuple[str, int | None]] = []
    for node in tree.iter_subtrees():
        if node.data != "member_dot" or len(node.children) != 2:
            continue
        target, name = node.children
        tokens = list(target.scan_values(lambda _: True))
        idents = [c for c in target.iter_subtrees() if c.data in ("ident", "dot_ident", "primary")]
        if len(tokens) == 1 and str(tokens[0]) == variable and idents:
            found.append((str(name), getattr(name, "column", None)))
    return sorted(found, key=lambda f: f[1] or 0)


@dataclass(frozen=True)
class FieldReference:
    """A chain of field selections on a variable: `history.counts_30d` or
    `customer["tier"]`, with each field's 1-based column in the expression (None if unknown)
    and the line it is on (1 for a one-line expression)."""

    variable: str
    fields: tuple[str, ...]
    columns: tuple[int | None, ...]
    line: int = 1


def _string_key(index: Any) -> tuple[str, int | None] | None:
    """The text of an index that is a plain string literal (`["tier"]`), else None."""
    node = index
    while hasattr(node, "data") and node.data != "literal" and len(node.children) == 1:
        node = node.children[0]
    if not hasattr(node, "data") or node.data != "literal" or len(node.children) != 1:
        return None
    token = node.children[0]
    text = str(token)
    plain = (
        getattr(token, "type", "") == "STRING_LIT"
        and len(text) >= 2
        and text[0] in "\"'"
        and text[-1] == text[0]
        and not text.startswith(text[0] * 3)
        and "\\" not in text
    )
    return (text[1:-1], getattr(token, "column", None)) if plain else None


def _chain(node: Any) -> tuple[Any, list[tuple[str, int | None]]] | None:
    """The root identifier token and the fields selected on it, for a `member_dot` or
    `member_index` node whose target is a chain down to a plain identifier."""
    fields: list[tuple[str, int | None]] = []
    while True:
        if node.data == "member_dot" and len(node.children) == 2:
            target, name = node.children
            fields.append((str(name), getattr(name, "column", None)))
            node = target
        elif node.data == "member_index" and len(node.children) == 2:
            target, index = node.children
            key = _string_key(index)
            if key is None:
                return None
            fields.append(key)
            node = target
        elif node.data in ("member", "primary") and len(node.children) == 1:
            child = node.children[0]
            if not hasattr(child, "data"):
                return None
            if child.data == "ident" and len(child.children) == 1:
                fields.reverse()
                return child.children[0], fields
            node = child
        else:
            return None


def _bound_names(tree: Any) -> set[str]:
    """Names a comprehension binds (`exists(t, t.x)` binds t)."""
    bound: set[str] = set()
    for node in tree.iter_subtrees():
        if _macro_name(node) in _MACROS:
            exprlist = next(
                (c for c in node.children if getattr(c, "data", "") == "exprlist"), None
            )
            first = exprlist.children[0] if exprlist is not None and exprlist.children else None
            tokens = list(first.scan_values(lambda _: True)) if first is not None else []
            if len(tokens) == 1:
                bound.add(str(tokens[0]))
    return bound


def field_references(expression: str) -> list[FieldReference]:
    """Every longest chain of fields the expression selects on a variable (`a.b.c` gives
    one reference, a.(b, c)), in the order written; names a comprehension binds are not
    variables. An expression that does not compile refers to nothing."""
    try:
        tree = _compile(expression)
    except ConditionError:
        return []
    bound = _bound_names(tree)
    found: dict[tuple[int, int], FieldReference] = {}
    for node in tree.iter_subtrees():
        if node.data not in ("member_dot", "member_index"):
            continue
        chain = _chain(node)
        if chain is None or str(chain[0]) in bound:
            continue
        root, fields = chain
        where = (getattr(root, "line", 1) or 1, getattr(root, "column", 0) or 0)
        known = found.get(where)
        if known is None or len(known.fields) < len(fields):
            found[where] = FieldReference(
                str(root),
                tuple(name for name, _ in fields),
                tuple(column for _, column in fields),
                where[0],
            )
    return [found[where] for where in sorted(found)]


@functools.lru_cache(maxsize=1_024)
def _program(expression: str) -> Any:
    return _environment().program(_compile(expression))


def to_cel(value: Any) -> Any:
    """Plain Python data (what a model_dump gives) as CEL values. `_convertible` tells,
    without building them, whether this succeeds: a type taken here is taken there."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float | Decimal):
        return celtypes.DoubleType(float(value))
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, datetime):
        return celtypes.TimestampType(value)
    if isinstance(value, timedelta):
        return celtypes.DurationType(seconds=int(value.total_seconds()))
    if isinstance(value, Mapping):
        return celtypes.MapType({celtypes.StringType(str(k)): to_cel(v) for k, v in value.items()})
    if isinstance(value, list | tuple | set | frozenset):
        return celtypes.ListType([to_cel(item) for item in value])
    raise ConditionError(f"a {type(value).__name__} cannot be given to a condition")


@functools.lru_cache(maxsize=1_024)
def _names_read(expression: str) -> frozenset[str]:
    """Every identifier `expression` names: the variables it reads (and any a macro binds)."""
    return frozenset(
        str(token)
        for node in _compile(expression).iter_subtrees()
        if node.data in ("ident", "dot_ident")
        for token in node.children
        if not hasattr(token, "data")
    )


_INT64 = range(-(2**63), 2**63)
_DURATION_SECONDS = range(
    int(celtypes.DurationType.MinSeconds), int(celtypes.DurationType.MaxSeconds) + 1
)


def _convertible(value: Any) -> bool:
    """Whether `to_cel` takes `value` without error, checked without building CEL values
    (CEL's ints are 64-bit and its durations bounded; other types it does not take)."""
    if value is None or isinstance(value, bool | str | float | Decimal | datetime):
        return True
    if isinstance(value, int):
        return value in _INT64
    if isinstance(value, timedelta):
        return int(value.total_seconds()) in _DURATION_SECONDS
    if isinstance(value, Mapping):
        return all(_convertible(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return all(_convertible(item) for item in value)
    return False


class Activation:
    """A condition's variables (plain data), each turned into CEL values once and only when a
    condition reads it: a caller evaluating several conditions over the same data (a recovery
    event's rules, a conversation's routes) passes one of these instead of having the data
    converted again for every condition.

    Data a condition cannot be given fails every condition, whichever variables it reads,
    with the same error in the same order: as when every variable was converted for every
    condition, so a recorded decision replays alike."""

    __slots__ = ("_plain", "_values", "_whole")

    def __init__(self, plain: Mapping[str, Any]) -> None:
        self._plain = plain
        self._values: dict[str, Any] = {}
        self._whole = not all(_convertible(value) for value in plain.values())

    def values_for(self, expression: str) -> dict[str, Any]:
        """The CEL values of the variables `expression` reads (every variable, raising its
        error, when some data cannot be converted)."""
        if self._whole:
            return {name: to_cel(value) for name, value in self._plain.items()}
        names = _names_read(expression)
        for name in names:
            if name not in self._values and name in self._plain:
                self._values[name] = to_cel(self._plain[name])
        return {name: self._values[name] for name in names if name in self._values}


def evaluate_value(expression: str, activation: Mapping[str, Any] | Activation) -> Any:
    """The CEL value of `expression` (compiled once, cached) over `activation` (plain data, or
    an Activation shared by several conditions); ConditionError on failure."""
    program = _program(expression)
    if not isinstance(activation, Activation):
        activation = Activation(activation)
    try:
        result = program.evaluate(activation.values_for(expression))
    except ConditionError:
        raise
    except CELEvalError as exc:
        raise ConditionError(
            f"cannot evaluate: {str(exc.args[0] if exc.args else exc)[:160]}"
        ) from None
    except RecursionError:
        raise ConditionError("the condition nests too deeply to evaluate") from None
    except Exception as exc:  # cel-python leaks TypeError/ValueError on some inputs
        raise ConditionError(f"cannot evaluate: {type(exc).__name__}: {str(exc)[:120]}") from None
    if isinstance(result, CELEvalError):
        raise ConditionError(
            f"cannot evaluate: {str(result.args[0] if result.args else result)[:160]}"
        )
    return result


def evaluate(expression: str, activation: Mapping[str, Any] | Activation) -> bool:
    """Whether the condition holds for `activation` (plain data or an Activation);
    ConditionError if not a bool."""
    result = evaluate_value(expression, activation)
    if not isinstance(result, bool):  # celtypes.BoolType subclasses int, not bool
        if isinstance(result, celtypes.BoolType):
            return bool(result)
        raise ConditionError(f"the condition gave a {type(result).__name__}, not true or false")
    return result


def condition(*variables: str) -> Any:
    """A pydantic string type holding a CEL condition over `variables`."""

    def check(expression: str) -> str:
        return check_condition(expression, variables)

    return Annotated[
        str,
        AfterValidator(check),
        WithJsonSchema(
            {
                "type": "string",
                "maxLength": MAX_CONDITION_CHARS,
                "description": f"A CEL expression over {', '.join(variables)}.",
            }
        ),
    ]


EscalationMatch = condition(*ESCALATION_MATCH)
RecoveryCondition = condition(*RECOVERY_TRIGGER)
DedupKey = condition(*RECOVERY_DEDUP)
CohortCondition = condition(*ROLLOUT_COHORT)
RouteCondition = condition(*HANDOFF_ROUTE)
