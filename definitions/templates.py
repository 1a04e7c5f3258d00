"""Message templates: sandboxed Jinja2, localised by the customer's language, bounded in cost.

Templates live in `definitions/catalog/templates/<name>.<lang>.j2`. A file may start with a
`Subject: <jinja>` line and a blank line; the rest is the body. Rendering looks for the
customer's language (`de-AT`, then `de`) and falls back to English.

Jinja2's sandbox stops attribute escapes (`''.__class__`), but by itself caps only `range()`.
This module adds the missing bounds so that no template, hostile or careless, can hang or
exhaust a worker:

- operators: `*`, `**`, `%` and `+` are checked *before* they run (`"A" * 10**9`,
  `9 ** (9 ** 9)`, `"%0999999999d" % 1`), and `~` concatenation is compiled into a bounded join;
- `str.format`/`format_map` are refused (their width specs build huge strings), as are the
  padding methods (`center`, `ljust`, `zfill`, ...); `join`/`replace` are size-checked;
- padding/filling filters (`center`, `indent`, `format`, `batch`, `slice`, `replace`,
  `wordwrap`) are wrapped with the same checks; `lipsum`, `cycler` and `joiner` are gone;
- every `for` loop draws on one per-render iteration budget; `namespace()` refuses
  oversized values; the rendered output is capped (64 KiB);
- `include`/`extends`/`import` have no loader, so no template can read a file;
- anything that still goes wrong (RecursionError, MemoryError, TypeError, compile-time
  SyntaxError, ...) becomes a `TemplateProblem` with a readable message.

Imports only the standard library and jinja2, so workflow code may use it.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace
from markupsafe import Markup, escape

DEFAULT_FOLDER = Path(__file__).parent / "catalog" / "templates"
FALLBACK_LANGUAGE = "en"

MAX_OUTPUT_CHARS = 64 * 1024
"""Longest rendered body (and longest intermediate string or list) a template may make."""
MAX_LOOP_ITERATIONS = 20_000
"""Loop iterations, summed over every `for` in one render."""
MAX_RANGE = 10_000
MAX_RENDER_SECONDS = 2.0
"""Wall-clock budget, checked at every loop iteration and concatenation."""
MAX_SOURCE_CHARS = 64 * 1024
MAX_POWER_BITS = 4096
MAX_FORMAT_WIDTH = 200

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,119}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8}){0,2}$")
_SUBJECT_PREFIX = "Subject:"
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\d*)(?:\.(\d+))?")


class TemplateProblem(Exception):
    """A template could not be found, compiled or rendered; the message says why."""


@dataclass(frozen=True)
class RenderedMessage:
    subject: str | None
    body: str
    language: str
    """The language actually used (the fallback when the customer's is missing)."""


# --- per-render budget ---------------------------------------------------------------------


@dataclass
class _Budget:
    iterations_left: int
    deadline: float

    def spend(self, iterations: int = 0) -> None:
        self.iterations_left -= iterations
        if self.iterations_left < 0:
            raise SecurityError(f"template loops ran more than {MAX_LOOP_ITERATIONS} times")
        if time.monotonic() > self.deadline:
            raise SecurityError(f"template took longer than {MAX_RENDER_SECONDS} s")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "opsflow_template_budget", default=None
)


def _spend(iterations: int = 0) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.spend(iterations)


def _check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT_CHARS:
        raise SecurityError(f"{what} would be {size} long; the limit is {MAX_OUTPUT_CHARS}")


def _sized(value: object) -> int:
    try:
        return len(value)  # type: ignore[arg-type]
    except TypeError:
        return 1


# --- code generation: bounded `~` and budgeted loops ---------------------------------------


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `~` into `environment.bounded_join` and wraps every loop's iterable."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        node.iter = nodes.Call(
            nodes.EnvironmentAttribute("budgeted_iter"), [node.iter], [], None, None
        )
        super().visit_For(node, frame)


# --- guarded helpers -----------------------------------------------------------------------


def _budgeted_iter(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _spend(1)
        yield item


def _safe_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range() of {len(numbers)} items; the limit is {MAX_RANGE}")
    return numbers


class _BoundedNamespace(Namespace):
    """`namespace()` whose values may not grow past the output limit (string doubling)."""

    def __setitem__(self, name: str, value: Any) -> None:
        _check_size(_sized(value), f"namespace value {name!r}")
        _spend()
        super().__setitem__(name, value)


def _check_printf(fmt: str) -> None:
    for width, precision in _FORMAT_WIDTH.findall(fmt):
        for number in (width, precision):
            if number and int(number) > MAX_FORMAT_WIDTH:
                raise SecurityError(f"format width {number} is over {MAX_FORMAT_WIDTH}")


def _check_mul(left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple | bytes) and isinstance(count, int):
            _check_size(len(sequence) * max(count, 0), "repeated sequence")


def _check_pow(base: Any, exponent: Any) -> None:
    too_big = (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and (exponent > MAX_POWER_BITS or abs(base).bit_length() * exponent > MAX_POWER_BITS)
    )
    if too_big:
        raise SecurityError(f"{base} ** {exponent} is too large a number")


def _guard_filter(original: Callable[..., Any], check: Callable[..., None]) -> Callable[..., Any]:
    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    return guarded


def _check_center(value: Any, width: int = 80, *_: Any, **__: Any) -> None:
    _check_size(int(width), "center() width")


def _check_indent(value: Any, width: Any = 4, *_: Any, **__: Any) -> None:
    pad = len(width) if isinstance(width, str) else int(width)
    _check_size(pad * (str(value).count("\n") + 1) + len(str(value)), "indented text")


def _check_format(value: Any, *_: Any, **__: Any) -> None:
    _check_printf(str(value))


def _check_batch(value: Any, linecount: int, *_: Any, **__: Any) -> None:
    _check_size(int(linecount), "batch() size")


def _check_slice(value: Any, slices: int, *_: Any, **__: Any) -> None:
    _check_size(int(slices), "slice() count")


def _check_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> None:
    text, old_text, new_text = str(value), str(old), str(new)
    hits = text.count(old_text) if old_text else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    _check_size(len(text) + hits * max(len(new_text) - len(old_text), 0), "replace() result")


def _check_wordwrap(environment: Any, value: Any, width: int = 79, *_: Any, **__: Any) -> None:
    _check_size(len(str(value)) * 2, "wordwrap() result")


# str methods that pad to a caller-chosen width: refused outright (use filters instead).
_REFUSED_STR_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"}
)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+", "//", "/"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=autoescape,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
            cache_size=0,
        )
        self.globals = {"range": _safe_range, "namespace": _BoundedNamespace, "dict": dict}
        guards: dict[str, Callable[..., None]] = {
            "center": _check_center,
            "indent": _check_indent,
            "format": _check_format,
            "batch": _check_batch,
            "slice": _check_slice,
            "replace": _check_replace,
            "wordwrap": _check_wordwrap,
        }
        for name, check in guards.items():
            self.filters[name] = _guard_filter(self.filters[name], check)

    # `budgeted_iter` and `bounded_join` are reached through `environment.` in compiled code.
    budgeted_iter = staticmethod(_budgeted_iter)

    @staticmethod
    def bounded_join(parts: tuple[Any, ...], autoescape: bool) -> str:
        _spend()
        if autoescape:
            texts = [escape(part) for part in parts]
            _check_size(sum(map(len, texts)), "joined text")
            return Markup("").join(texts)
        strings = [str(part) for part in parts]
        _check_size(sum(map(len, strings)), "joined text")
        return "".join(strings)

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        _spend()
        if operator_ == "*":
            _check_mul(left, right)
        elif operator_ == "**":
            _check_pow(left, right)
        elif operator_ == "%" and isinstance(left, str):
            _check_printf(left)
        elif operator_ == "+" and isinstance(left, str | list | tuple):
            _check_size(_sized(left) + _sized(right), "sum")
        return super().call_binop(context, operator_, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # jinja2 hands `str.format`/`format_map` to a sandboxed formatter, whose width specs
        # still build gigabyte strings ("{0:{1}}"); message templates have no need for them.
        if isinstance(getattr(value, "__self__", None), str) and getattr(value, "__name__", "") in (
            "format",
            "format_map",
        ):

            def refuse(*_: Any, **__: Any) -> str:
                raise SecurityError("str.format() is not allowed in templates; use {{ ... }}")

            return refuse
        return None

    def is_safe_callable(self, obj: Any) -> bool:
        owner = getattr(obj, "__self__", None)
        if isinstance(owner, str) and getattr(obj, "__name__", "") in _REFUSED_STR_METHODS:
            return False
        return super().is_safe_callable(obj)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _spend()
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str) and name == "join" and args:
            items = list(args[0])
            _check_size(
                sum(_sized(item) for item in items) + len(owner) * len(items), "joined text"
            )
            args = (items, *args[1:])
        elif isinstance(owner, str) and name == "replace" and len(args) >= 2:
            _check_replace(None, owner, args[0], args[1], *args[2:3])
        return super().call(__context, __obj, *args, **kwargs)


_TEXT = _BoundedSandbox(autoescape=False)
_HTML = _BoundedSandbox(autoescape=True)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    if isinstance(exc, UndefinedError):
        return f"missing value: {exc.message}"
    if isinstance(exc, SecurityError):
        return f"refused: {exc}"
    if isinstance(exc, RecursionError):
        return "template nests or recurses too deeply"
    if isinstance(exc, MemoryError):
        return "template needs too much memory"
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    if "no loader" in text:
        return "templates may not include, import or extend other files"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@functools.lru_cache(maxsize=256)
def _compile(source: str, html: bool) -> Any:
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateProblem(f"template source is over {MAX_SOURCE_CHARS} characters")
    try:
        return (_HTML if html else _TEXT).from_string(source)
    except TemplateProblem:
        raise
    except Exception as exc:  # compile can raise SyntaxError, RecursionError, ValueError, ...
        raise TemplateProblem(_describe(exc)) from None


def _with_customer_name(context: Mapping[str, object]) -> dict[str, object]:
    """The context with `customer.name` always set: a customer the CRM does not know (or a
    profile without a name) is called by its id, so no message fails on a missing name."""
    values = dict(context)
    customer = values.get("customer")
    if isinstance(customer, Mapping) and not customer.get("name"):
        values["customer"] = {**customer, "name": str(customer.get("id") or "customer")}
    return values


def render_string(source: str, context: Mapping[str, object], *, html: bool = False) -> str:
    """Render one template string within the budget, or raise TemplateProblem."""
    template = _compile(source, html)
    token = _budget.set(_Budget(MAX_LOOP_ITERATIONS, time.monotonic() + MAX_RENDER_SECONDS))
    try:
        chunks: list[str] = []
        length = 0
        for chunk in template.generate(_with_customer_name(context)):
            length += len(chunk)
            if length > MAX_OUTPUT_CHARS:
                raise TemplateProblem(f"rendered text is over {MAX_OUTPUT_CHARS} characters")
            chunks.append(chunk)
            _spend()
        return "".join(chunks)
    except TemplateProblem:
        raise
    except Exception as exc:  # RecursionError, MemoryError, TypeError, ... all end here
        raise TemplateProblem(_describe(exc)) from None
    finally:
        _budget.reset(token)


def _parse(source: str) -> nodes.Template:
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateProblem(f"template source is over {MAX_SOURCE_CHARS} characters")
    try:
        return _TEXT.parse(source)
    except Exception as exc:
        raise TemplateProblem(_describe(exc)) from None


def undeclared_variables(source: str) -> set[str]:
    """The names a template reads from its context (globals such as `range` excluded)."""
    return set(meta.find_undeclared_variables(_parse(source))) - set(_TEXT.globals)


@dataclass(frozen=True)
class AttributePath:
    """`{{ case.subject }}` or `{{ customer["name"] }}` in a template: the context variable,
    the attributes read on it in order, and the 1-based line of the source it is on."""

    variable: str
    fields: tuple[str, ...]
    line: int


def _attribute_chain(node: nodes.Node) -> tuple[nodes.Name, list[str]] | None:
    fields: list[str] = []
    while True:
        if isinstance(node, nodes.Getattr):
            fields.append(node.attr)
            node = node.node
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            fields.append(node.arg.value)
            node = node.node
        elif isinstance(node, nodes.Name):
            fields.reverse()
            return node, fields
        else:
            return None


def attribute_paths(source: str) -> list[AttributePath]:
    """Every longest chain of attributes a template reads on a context variable
    (`case.sla.name` gives one path), in source order. A name the template assigns anywhere
    (`set`, `for`, macro arguments) is not the context's and is left out; a chain through a
    call or a computed index stops there (`case.subject.upper().x` reads case.subject)."""
    parsed = _parse(source)
    chains: dict[int, tuple[nodes.Node, nodes.Name, list[str]]] = {}
    try:
        assigned = {name.name for name in parsed.find_all(nodes.Name) if name.ctx != "load"}
        context = set(meta.find_undeclared_variables(parsed)) - assigned - set(_TEXT.globals)
        for node in parsed.find_all((nodes.Getattr, nodes.Getitem)):
            chain = _attribute_chain(node)
            if chain is not None and chain[0].name in context:
                chains[id(node)] = (node, *chain)
    except Exception as exc:  # RecursionError on a deep tree, whatever else: one message
        raise TemplateProblem(_describe(exc)) from None
    inner = {id(getattr(node, "node", None)) for node, _, _ in chains.values()}
    found = [
        AttributePath(root.name, tuple(fields), node.lineno)
        for key, (node, root, fields) in chains.items()
        if key not in inner
    ]
    return sorted(set(found), key=lambda p: (p.line, p.variable, p.fields))


def _split_subject(text: str) -> tuple[str | None, str]:
    if not text.startswith(_SUBJECT_PREFIX):
        return None, text
    first, _, rest = text.partition("\n")
    if rest.startswith("\r\n"):
        rest = rest[2:]
    elif rest.startswith("\n"):
        rest = rest[1:]
    return first[len(_SUBJECT_PREFIX) :].strip(), rest


def _language_candidates(language: str) -> list[str]:
    if not _LANGUAGE.match(language):
        return [FALLBACK_LANGUAGE]
    # "de_at" -> de-AT, de-at, de, en: the region as written by BCP 47, then lower case.
    primary, *regions = language.replace("_", "-").split("-")
    primary = primary.lower()
    candidates = (
        [f"{primary}-{regions[0].upper()}", f"{primary}-{regions[0].lower()}"] if regions else []
    )
    return list(dict.fromkeys([*candidates, primary, FALLBACK_LANGUAGE]))


def template_path(name: str, language: str, *, folder: Path | None = None) -> tuple[Path, str]:
    """The file that serves `name` for `language` (with fallback), and its language."""
    if not _NAME.match(name):
        raise TemplateProblem(
            f"bad template name {name[:60]!r}: use lower-case letters, digits, '-' and '_'"
        )
    base = folder if folder is not None else DEFAULT_FOLDER
    for candidate in _language_candidates(language):
        path = base / f"{name}.{candidate}.j2"
        if path.is_file():
            return path, candidate
    raise TemplateProblem(
        f"no template {name!r} for language {language[:20]!r} or {FALLBACK_LANGUAGE!r} in {base}"
    )


def render_message(
    name: str, language: str, context: Mapping[str, object], *, folder: Path | None = None
) -> RenderedMessage:
    """Render template `name` in the customer's language, falling back to English."""
    path, used_language = template_path(name, language, folder=folder)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateProblem(f"cannot read template {path.name}: {exc}") from None
    subject_source, body_source = _split_subject(text)
    subject = None
    if subject_source is not None:
        # A subject is one header line: newlines from data must not inject more headers.
        rendered = render_string(subject_source, context)
        subject = " ".join(rendered.split())
    body = render_string(body_source, context)
    return RenderedMessage(subject=subject, body=body, language=used_language)


__all__ = [
    "DEFAULT_FOLDER",
    "MAX_OUTPUT_CHARS",
    "AttributePath",
    "RenderedMessage",
    "TemplateProblem",
    "attribute_paths",
    "render_message",
    "render_string",
    "template_path",
    "undeclared_variables",
]
