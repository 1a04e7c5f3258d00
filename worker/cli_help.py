"""Help that reads as a person's: `opsflow case show TICKET`, `--queue QUEUE`, and flags
without a type. Typer 0.29 shows Python types (`{ticket}`, `<str>`, `<bool>`), which mean
nothing to a change owner; this adjusts its two parameter classes once, for every command."""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption


def _argument_name(self: TyperArgument) -> str:
    return self.metavar or (self.name or "value").upper()


def _argument_usage(self: TyperArgument) -> str:
    name = _argument_name(self)
    if self.nargs != 1:
        name += "..."
    return name if self.required else f"[{name}]"


def _argument_type(self: TyperArgument, ctx: Any) -> str | None:
    return None  # the name already says what it is; its help says the rest


def _option_type(self: TyperOption, ctx: Any) -> str | None:
    if self.is_flag or self.count:
        return None
    if self.metavar is not None:
        return self.metavar
    name = (self.name or "value").upper()
    return f"{name}..." if self.nargs != 1 or self.multiple else name


def use_plain_metavars() -> None:
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment,method-assign]
    TyperArgument._usage_display_name = _argument_usage  # type: ignore[method-assign]
    TyperArgument.display_type_rich = _argument_type  # type: ignore[assignment,method-assign]
    TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
