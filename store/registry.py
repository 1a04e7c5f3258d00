"""The definition registry: immutable, numbered versions in the app database.

Deploying stores a new version only when a definition's content changed (its content hash,
over the document as written, is new); deploying the same folder again changes nothing.
Workflows never read the registry: whoever starts a run reads `latest()` (or `get()`) and
passes the `PinnedDefinition` as the workflow's input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import definitions
from definitions.errors import OpsflowError
from definitions.models import PinnedDefinition, definition_adapter
from store.db import transaction
from store.models import DefinitionVersion

if TYPE_CHECKING:  # loading and lint (YAML, Jinja2) only where a folder is checked
    from definitions.loader import LoadedDefinition, Problem

CATALOG_DIR = Path(definitions.__file__).resolve().parent / "catalog"
"""The shipped definitions; `opsflow dev` deploys them at start."""
TEMPLATES_DIR = CATALOG_DIR / "templates"


class DefinitionProblems(OpsflowError):
    """Definitions that failed validation or lint; the message lists every problem."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class DefinitionNotFound(OpsflowError):
    pass


@dataclass(frozen=True)
class DeployResult:
    name: str
    kind: str
    version: int
    content_hash: str
    status: Literal["created", "unchanged"]
    source: str


@dataclass(frozen=True)
class VersionInfo:
    name: str
    kind: str
    version: int
    content_hash: str
    deployed_at: datetime
    deployed_by: str | None
    source: str | None


def templates_for(folder: Path) -> Path:
    """A folder's own templates/ when it has one, else the catalog's."""
    own = folder / "templates" if folder.is_dir() else folder.parent / "templates"
    return own if own.is_dir() else TEMPLATES_DIR


def check_folder(
    paths: Sequence[Path], *, with_lint: bool = True, known: dict[str, str] | None = None
) -> list[LoadedDefinition]:
    """Load (and lint) every definition under `paths`; DefinitionProblems lists all problems:
    the schema's for the documents it refuses and lint's for the others, in one pass, by
    file and line. A reference to a refused document is not reported again as missing."""
    from definitions.lint import lint
    from definitions.loader import load_paths

    result = load_paths(paths)
    problems = list(result.problems)
    if with_lint and result.definitions:
        known = {**(known or {}), **result.refused}
        problems += lint(result.definitions, templates=templates_for(paths[0]), known=known)
    if problems:
        raise DefinitionProblems(sorted(set(problems)))
    return result.definitions


def _info(row: DefinitionVersion) -> VersionInfo:
    return VersionInfo(
        row.name,
        row.kind,
        row.version,
        row.content_hash,
        row.deployed_at,
        row.deployed_by,
        row.source,
    )


def pin(row: DefinitionVersion) -> PinnedDefinition:
    """The stored body, validated (country holidays resolved here, never in a workflow)."""
    return PinnedDefinition(
        name=row.name,
        version=row.version,
        content_hash=row.content_hash,
        kind=row.kind,
        definition=definition_adapter.validate_python(row.body),
    )


async def _deploy_one(
    session: AsyncSession, loaded: LoadedDefinition, deployed_by: str | None
) -> DeployResult:
    name, digest = loaded.name, loaded.content_hash
    source = f"{loaded.source.file}#{loaded.source.index + 1}"
    newest = (
        await session.execute(
            select(DefinitionVersion)
            .where(DefinitionVersion.name == name)
            .order_by(DefinitionVersion.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if newest is not None and newest.kind != loaded.kind:
        raise OpsflowError(
            f"{source}: {name!r} is deployed as a {newest.kind} definition; "
            f"it cannot become a {loaded.kind} (choose another name)"
        )
    if newest is not None and newest.content_hash == digest:
        return DeployResult(name, loaded.kind, newest.version, digest, "unchanged", source)
    older = (
        await session.execute(
            select(DefinitionVersion.version).where(
                DefinitionVersion.name == name, DefinitionVersion.content_hash == digest
            )
        )
    ).scalar_one_or_none()
    if older is not None:
        # Versions are immutable and unique per content, so an old content cannot be the
        # newest again; a changed description (or any edit) makes it a new version.
        raise OpsflowError(
            f"{source}: {name!r} has the content of version {older}, but the newest is "
            f"version {newest.version if newest else older}; change it to deploy it again"
        )
    version = (newest.version if newest else 0) + 1
    session.add(
        DefinitionVersion(
            name=name,
            kind=loaded.kind,
            version=version,
            content_hash=digest,
            body=loaded.source.data,
            source=source[:1000],
            deployed_by=deployed_by,
        )
    )
    await session.flush()
    return DeployResult(name, loaded.kind, version, digest, "created", source)


async def deploy(
    sessions: async_sessionmaker[AsyncSession],
    definitions: Sequence[LoadedDefinition],
    *,
    deployed_by: str | None = None,
) -> list[DeployResult]:
    """Store each definition whose content is new, all in one transaction."""
    for attempt in range(2):
        try:
            async with transaction(sessions) as session:
                return [await _deploy_one(session, loaded, deployed_by) for loaded in definitions]
        except IntegrityError:
            # Another process deployed the same definitions at the same moment: read again.
            if attempt:
                raise OpsflowError("the registry changed during deploy; try again") from None
    raise AssertionError("unreachable")


async def deploy_folder(
    sessions: async_sessionmaker[AsyncSession], path: Path, *, deployed_by: str | None = None
) -> list[DeployResult]:
    """Validate and lint every definition under `path`, then deploy them (idempotent)."""
    async with sessions() as session:
        rows = await session.execute(select(DefinitionVersion.name, DefinitionVersion.kind))
        known = {name: kind for name, kind in rows.all()}
    definitions = check_folder([path], known=known)
    return await deploy(sessions, definitions, deployed_by=deployed_by)


async def get(
    sessions: async_sessionmaker[AsyncSession], name: str, version: int
) -> PinnedDefinition:
    async with sessions() as session:
        row = (
            await session.execute(
                select(DefinitionVersion).where(
                    DefinitionVersion.name == name, DefinitionVersion.version == version
                )
            )
        ).scalar_one_or_none()
    if row is None:
        raise DefinitionNotFound(f"no version {version} of definition {name!r}")
    return pin(row)


async def latest(sessions: async_sessionmaker[AsyncSession], name: str) -> PinnedDefinition:
    async with sessions() as session:
        row = (
            await session.execute(
                select(DefinitionVersion)
                .where(DefinitionVersion.name == name)
                .order_by(DefinitionVersion.version.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
    if row is None:
        raise DefinitionNotFound(f"no definition named {name!r} is deployed")
    return pin(row)


async def latest_of_kind(
    sessions: async_sessionmaker[AsyncSession], kind: str
) -> list[PinnedDefinition]:
    """The newest version of every definition of `kind` (e.g. all recovery rule sets)."""
    async with sessions() as session:
        newest = (
            select(DefinitionVersion.name, func.max(DefinitionVersion.version).label("version"))
            .where(DefinitionVersion.kind == kind)
            .group_by(DefinitionVersion.name)
            .subquery()
        )
        rows = (
            await session.execute(
                select(DefinitionVersion)
                .join(
                    newest,
                    (DefinitionVersion.name == newest.c.name)
                    & (DefinitionVersion.version == newest.c.version),
                )
                .order_by(DefinitionVersion.name)
            )
        ).scalars()
        return [pin(row) for row in rows]


async def list_versions(
    sessions: async_sessionmaker[AsyncSession], name: str | None = None
) -> list[VersionInfo]:
    """Every version of `name` (or of every definition), by name and version."""
    query = select(DefinitionVersion).order_by(DefinitionVersion.name, DefinitionVersion.version)
    if name is not None:
        query = query.where(DefinitionVersion.name == name)
    async with sessions() as session:
        return [_info(row) for row in (await session.execute(query)).scalars()]


async def body(
    sessions: async_sessionmaker[AsyncSession], name: str, version: int
) -> dict[str, Any]:
    """The document exactly as deployed (plain data), for show and diff."""
    async with sessions() as session:
        row: dict[str, Any] | None = (
            await session.execute(
                select(DefinitionVersion.body).where(
                    DefinitionVersion.name == name, DefinitionVersion.version == version
                )
            )
        ).scalar_one_or_none()
    if row is None:
        raise DefinitionNotFound(f"no version {version} of definition {name!r}")
    return row
