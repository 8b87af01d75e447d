"""The one place that decides whether a model version is stale, and says why, naming paths."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from agent.data.deps import DataDepChange, data_dep_change
from agent.errors import WatchkeeperError
from agent.ledger.queries import (
    current_version,
    current_version_of,
    is_builtin_repo,
    latest_succeeded,
    list_repos,
)
from agent.paths import WatchkeeperPaths
from agent.project.git import changed_files, head_hashes, object_type, working_hashes
from agent.project.spec import SPEC_FILE, ModelSpec, ProjectSpec, load_project

MAX_NAMED_FILES = 8


@dataclass(frozen=True)
class StaleReason:
    """One thing that changed: `kind` is command, params, deps, code, data, untrained,
    undeclared or unreadable; `paths` names the paths involved; `drift` holds per-file drift
    summaries."""

    kind: str
    message: str
    paths: tuple[str, ...] = ()
    drift: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "paths": list(self.paths),
            "drift": list(self.drift),
        }


@dataclass(frozen=True)
class Staleness:
    """Every reason a version no longer matches what the repo would build now.

    `builtin` marks a built-in model (such as `coding-time`): it has no repo to compare with
    and is kept current by the agent's scheduled refit, so it is never stale.
    """

    reasons: tuple[StaleReason, ...]
    builtin: bool = False

    @property
    def stale(self) -> bool:
        return bool(self.reasons)

    @property
    def messages(self) -> list[str]:
        return [reason.message for reason in self.reasons]


class Verdict(StrEnum):
    """What a model is, judged on its current version (see `current_version`)."""

    FRESH = "fresh"
    STALE = "stale"
    NEVER_TRAINED = "never trained"
    BUILTIN = "built-in"
    ERROR = "error"


@dataclass(frozen=True)
class Finding:
    """The one verdict on one model: what every view (CLI, agent, app, tray) shows.

    `version` is the model's current version, the one the verdict is about (None when there is
    none): the newest succeeded version trained with the declared params, or a promoted one;
    `latest_status` is the status of the model's newest version of any status, so a view can
    say that the last attempt failed. `error` says why no verdict could be reached.
    """

    repo: str
    model: str
    verdict: Verdict
    reasons: tuple[StaleReason, ...] = ()
    version: int | None = None
    version_id: int | None = None
    model_id: int | None = None
    commit: str | None = None
    on_stale: str = "notify"
    latest_status: str | None = None
    trained_at: float | None = None
    error: str | None = None
    checked_at: float = 0.0

    @property
    def stale(self) -> bool:
        return self.verdict is Verdict.STALE

    @property
    def messages(self) -> list[str]:
        return [reason.message for reason in self.reasons]

    @property
    def drift(self) -> list[str]:
        return [line for reason in self.reasons for line in reason.drift]

    def as_json(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "model": self.model,
            "verdict": self.verdict.value,
            "reasons": [reason.as_json() for reason in self.reasons],
            "version": self.version,
            "version_id": self.version_id,
            "model_id": self.model_id,
            "commit": self.commit,
            "on_stale": self.on_stale,
            "latest_status": self.latest_status,
            "trained_at": self.trained_at,
            "error": self.error,
            "checked_at": self.checked_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        """The inverse of `as_json` (used to read a child process's findings)."""
        return cls(
            repo=str(data["repo"]),
            model=str(data["model"]),
            verdict=Verdict(data["verdict"]),
            reasons=tuple(
                StaleReason(
                    str(reason["kind"]),
                    str(reason["message"]),
                    tuple(reason.get("paths") or ()),
                    tuple(reason.get("drift") or ()),
                )
                for reason in data.get("reasons") or ()
            ),
            version=data.get("version"),
            version_id=data.get("version_id"),
            model_id=data.get("model_id"),
            commit=data.get("commit"),
            on_stale=str(data.get("on_stale") or "notify"),
            latest_status=data.get("latest_status"),
            trained_at=data.get("trained_at"),
            error=data.get("error"),
            checked_at=float(data.get("checked_at") or 0.0),
        )


def version_state(row: dict[str, Any], staleness: Staleness | None) -> str:
    """One version's own state: its run status unless it succeeded, then fresh/stale/built-in.

    A failed or cancelled version is never called fresh.

    >>> version_state({"status": "failed"}, Staleness(()))
    'failed'
    >>> version_state({"status": "succeeded"}, Staleness(()))
    'fresh'
    """
    if row["status"] != "succeeded":
        return str(row["status"])
    if staleness is None:
        return "unchecked"
    if staleness.builtin:
        return Verdict.BUILTIN.value
    return Verdict.STALE.value if staleness.stale else Verdict.FRESH.value


@dataclass(frozen=True)
class RepoScan:
    """The findings for one repo's declared models, or why there are none.

    `error` is set when the repo's `watchkeeper.toml` cannot be read (or was deleted while
    versions exist); `skipped` says why a registered repo was not checked at all.
    """

    root: Path
    repo_id: int | None
    findings: tuple[Finding, ...] = ()
    error: str | None = None
    skipped: str | None = None


def _name_files(files: list[str]) -> str:
    named = ", ".join(files[:MAX_NAMED_FILES])
    more = len(files) - MAX_NAMED_FILES
    return named + (f" and {more} more" if more > 0 else "")


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def params_reason(old: dict[str, Any], new: dict[str, Any]) -> StaleReason | None:
    """What differs between the params a version used and the declared ones."""
    changes: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            changes.append(f"{key} removed (was {_short(old[key])})")
        elif key not in old:
            changes.append(f"{key} added (= {_short(new[key])})")
        elif _short(old[key]) != _short(new[key]):
            changes.append(f"{key} {_short(old[key])} → {_short(new[key])}")
    if not changes:
        return None
    return StaleReason("params", "params changed: " + ", ".join(changes))


class StalenessChecker:
    """Compares versions with the current repos, reading each repo's state once."""

    def __init__(
        self, db: Database, paths: WatchkeeperPaths | None = None, *, drift: bool = True
    ) -> None:
        self.db = db
        self.paths = paths or WatchkeeperPaths.from_environment()
        self.drift = drift
        self._projects: dict[Path, ProjectSpec] = {}
        self._working: dict[tuple[Path, str], str | None] = {}
        self._head: dict[tuple[Path, str], str | None] = {}
        self._data: dict[tuple[int, Path], DataDepChange | None] = {}
        self._current: dict[int, int | None] = {}

    def project(self, root: Path) -> ProjectSpec:
        """The repo's current watchkeeper.toml (read once)."""
        if root not in self._projects:
            self._projects[root] = load_project(root)
        return self._projects[root]

    def scan_repo(
        self, root: Path, repo_id: int | None, names: Iterable[str] | None = None
    ) -> RepoScan:
        """A finding for each declared model of a repo (or only the named ones)."""
        if not root.is_dir():
            return RepoScan(root, repo_id, skipped="the folder no longer exists")
        if not (root / SPEC_FILE).exists():
            trained = _trained_models(self.db, repo_id)
            if trained:
                return RepoScan(
                    root,
                    repo_id,
                    error=f"{root / SPEC_FILE} is missing, but the ledger has versions of "
                    f"{', '.join(trained)} from it; restore the file (git checkout "
                    f"{SPEC_FILE}) or declare the models again",
                )
            return RepoScan(root, repo_id, skipped=f"no {SPEC_FILE} (watched only)")
        try:
            project = self.project(root)
        except WatchkeeperError as error:
            return RepoScan(root, repo_id, error=str(error))
        wanted = list(project.models) if names is None else list(names)
        findings = tuple(
            self.finding(project, project.models[name], repo_id)
            for name in wanted
            if name in project.models
        )
        return RepoScan(root, repo_id, findings)

    def finding(self, project: ProjectSpec, model: ModelSpec, repo_id: int | None) -> Finding:
        """The verdict on one declared model, judged on its current version.

        Experiment versions (trained with other params) are not judged unless promoted.
        """
        root = project.root
        common: dict[str, Any] = {
            "repo": str(root),
            "model": model.name,
            "on_stale": model.on_stale,
            "checked_at": time.time(),
        }
        latest = _latest_status(self.db, repo_id, model.name)
        if latest is not None:
            common["model_id"], common["latest_status"] = latest
        missing = [dep for dep in model.deps if not os.path.lexists(root / dep)]
        if missing:
            return Finding(
                verdict=Verdict.ERROR,
                error=f"{project.where(model.name, 'deps')}: [models.{model.name}] deps: "
                f"{', '.join(missing)} does not exist; fix the path in {SPEC_FILE} "
                "or restore the file",
                **common,
            )
        version = current_version_of(self.db, repo_id, model.name) if repo_id is not None else None
        if version is None:
            experiments = (
                latest_succeeded(self.db, repo_id, model.name) if repo_id is not None else None
            )
            message = (
                f"{model.name} has only experiment versions (v{experiments['version']} is the "
                f"newest); train it with its declared params (`watchkeeper train {model.name}`) "
                f"or promote one (`watchkeeper models promote {model.name}@"
                f"{experiments['version']}`)"
                if experiments is not None
                else f"{model.name} has no successful version yet; "
                f"train it with `watchkeeper train {model.name}`"
            )
            reason = StaleReason("untrained", message)
            return Finding(verdict=Verdict.NEVER_TRAINED, reasons=(reason,), **common)
        staleness = self.check(version)
        return Finding(
            verdict=Verdict.STALE if staleness.stale else Verdict.FRESH,
            reasons=staleness.reasons,
            version=int(version["version"]),
            version_id=int(version["id"]),
            commit=version["commit_sha"],
            trained_at=version["ended_at"],
            **common,
        )

    def check(self, version: dict[str, Any]) -> Staleness:
        """Why a version (a decoded model_versions row with `repo_path` and `model`) is stale."""
        if is_builtin_repo(version["repo_path"]):
            return Staleness((), builtin=True)
        root = Path(version["repo_path"])
        if not root.is_dir():
            return Staleness((StaleReason("undeclared", f"the repo {root} no longer exists"),))
        try:
            project = self.project(root)
        except WatchkeeperError as error:
            return Staleness((StaleReason("unreadable", str(error)),))
        model = project.models.get(version["model"])
        if model is None:
            return Staleness(
                (
                    StaleReason(
                        "undeclared",
                        f"{version['model']} is no longer declared in {project.path}",
                    ),
                )
            )
        reasons: list[StaleReason] = []
        if version["train_command"] != model.train:
            reasons.append(
                StaleReason(
                    "command",
                    f"train command changed: {version['train_command']!r} → {model.train!r}",
                )
            )
        params = params_reason(version.get("params") or {}, model.params)
        if params and self._judged_on_params(version):
            reasons.append(params)
        code: dict[str, str | None] = version.get("code") or {}
        data: dict[str, dict[str, Any]] = version.get("data") or {}
        added = [dep for dep in model.deps if dep not in code and dep not in data]
        removed = [dep for dep in [*code, *data] if dep not in model.deps]
        if added or removed:
            parts = [f"{dep} added" for dep in added] + [f"{dep} removed" for dep in removed]
            reasons.append(
                StaleReason("deps", "deps changed: " + ", ".join(parts), tuple(added + removed))
            )
        kept_code = {dep: old for dep, old in code.items() if dep in model.deps}
        reasons.extend(self._code_reasons(root, version["commit_sha"], kept_code))
        for dep, record in data.items():
            if dep in model.deps:
                reason = self._data_reason(root, dep, int(record["snapshot_id"]))
                if reason:
                    reasons.append(reason)
        return Staleness(tuple(reasons))

    def _judged_on_params(self, version: dict[str, Any]) -> bool:
        """An experiment's params differ on purpose: they count only once it is current."""
        if not version.get("experiment"):
            return True
        model_id = int(version["model_id"])
        if model_id not in self._current:
            current = current_version(self.db, model_id)
            self._current[model_id] = int(current["id"]) if current else None
        return self._current[model_id] == int(version["id"])

    def _hashes(self, root: Path, deps: list[str]) -> None:
        missing = [dep for dep in deps if (root, dep) not in self._working]
        if missing:
            for dep, value in working_hashes(root, missing).items():
                self._working[(root, dep)] = value
            for dep, value in head_hashes(root, missing).items():
                self._head[(root, dep)] = value

    def _code_reasons(
        self, root: Path, commit: str | None, recorded: dict[str, str | None]
    ) -> list[StaleReason]:
        self._hashes(root, list(recorded))
        reasons: list[StaleReason] = []
        since = f" since {commit[:10]}" if commit else ""
        for dep, old in recorded.items():
            current = self._working[(root, dep)]
            if current == old:
                continue
            if current is None:
                reasons.append(StaleReason("code", f"code dep {dep} no longer exists", (dep,)))
                continue
            head = self._head[(root, dep)]
            committed = head != old
            uncommitted = current != head
            label = " and ".join(
                word
                for word, flag in (("committed", committed), ("uncommitted", uncommitted))
                if flag
            )
            files: list[str] = [dep]
            if old and object_type(root, old) == "tree" and object_type(root, current) == "tree":
                files = [
                    f"{path} ({status})" for status, path in changed_files(root, old, current, dep)
                ] or [dep]
            elif old and object_type(root, old) == "blob":
                files = [f"{dep} (modified)"]
            reasons.append(
                StaleReason(
                    "code",
                    f"code changed{since} ({label}) in {dep}: {_name_files(files)}",
                    tuple(f.rsplit(" (", 1)[0] for f in files),
                )
            )
        return reasons

    def _data_reason(self, root: Path, dep: str, snapshot_id: int) -> StaleReason | None:
        path = root / dep
        if not path.exists():
            return StaleReason("data", f"data dep {dep} no longer exists", (dep,))
        key = (snapshot_id, path)
        if key not in self._data:
            self._data[key] = data_dep_change(
                self.db, snapshot_id, path, self.paths, drift=self.drift
            )
        change = self._data[key]
        if change is None:
            return None
        parts = []
        for word, files in (
            ("added", change.added),
            ("removed", change.removed),
            ("modified", change.modified),
        ):
            if files:
                parts.append(f"{len(files)} {word} ({_name_files(files)})")
        summary = "; ".join(parts) or "content changed"
        message = f"data changed in {dep}: {summary}"
        named = tuple(
            f"{dep}/{name}" if path.is_dir() else dep
            for name in [*change.added, *change.removed, *change.modified]
        )
        return StaleReason("data", message, named or (dep,), tuple(change.drift))


def _trained_models(db: Database, repo_id: int | None) -> list[str]:
    if repo_id is None:
        return []
    rows = db.execute(
        "SELECT DISTINCT m.name FROM models m JOIN model_versions v ON v.model_id = m.id "
        "WHERE m.repo_id = ? ORDER BY m.name",
        [repo_id],
    ).fetchall()
    return [str(row[0]) for row in rows]


def _latest_status(db: Database, repo_id: int | None, model: str) -> tuple[int, str | None] | None:
    """The model's id and the status of its newest version (None when it has no models row)."""
    if repo_id is None:
        return None
    row = db.execute(
        "SELECT m.id, (SELECT status FROM model_versions WHERE model_id = m.id "
        "ORDER BY version DESC LIMIT 1) FROM models m WHERE m.repo_id = ? AND m.name = ?",
        [repo_id, model],
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def builtin_findings(db: Database) -> list[Finding]:
    """One `built-in` finding per built-in model (kept current by the agent, never stale)."""
    found = []
    for repo in list_repos(db):
        if not is_builtin_repo(repo["path"]):
            continue
        for model_id, name in db.execute(
            "SELECT id, name FROM models WHERE repo_id = ? ORDER BY name", [repo["id"]]
        ).fetchall():
            version = latest_succeeded(db, int(repo["id"]), name)
            found.append(
                Finding(
                    repo=repo["path"],
                    model=name,
                    verdict=Verdict.BUILTIN,
                    version=int(version["version"]) if version else None,
                    version_id=int(version["id"]) if version else None,
                    model_id=int(model_id),
                    latest_status=version["status"] if version else None,
                    trained_at=version["ended_at"] if version else None,
                    checked_at=time.time(),
                )
            )
    return found


def registered_roots(db: Database) -> list[tuple[Path, int | None]]:
    """The repos registered in the ledger that can declare models (not built-in ones)."""
    return [
        (Path(repo["path"]), int(repo["id"]))
        for repo in list_repos(db)
        if not is_builtin_repo(repo["path"])
    ]


def scan_repos(
    db: Database,
    roots: Iterable[tuple[Path, int | None]],
    paths: WatchkeeperPaths | None = None,
    *,
    names: Iterable[str] | None = None,
    drift: bool = True,
) -> list[RepoScan]:
    """The verdicts for the declared models of the given repos (`(root, repo_id)` pairs).

    This is the one function every view asks: `watchkeeper status`, `models list`, the
    agent's alerts, and the app's pages and tray.
    """
    checker = StalenessChecker(db, paths, drift=drift)
    wanted = None if names is None else list(names)
    return [checker.scan_repo(root, repo_id, wanted) for root, repo_id in roots]
