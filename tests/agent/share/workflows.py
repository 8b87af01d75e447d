"""Read the CI workflows out of docs/ci.md: the GitHub steps' `run:` and the GitLab `script:`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.agent.runs.gitrepo import REPO_ROOT

CI_DOC = REPO_ROOT / "docs" / "ci.md"


@dataclass
class ShellStep:
    """One shell step of a workflow and the variables it sets."""

    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)


def yaml_blocks(path: Path = CI_DOC) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def github_steps(block: str) -> list[ShellStep]:
    """The steps with `run:` in order, with their `env:` (a block scalar `run: |` included)."""
    steps: list[ShellStep] = []
    current: dict[str, object] | None = None
    lines = block.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        item = re.match(r"^(\s*)- (name|uses): (.*)$", line)
        if item:
            current = {"name": item.group(3), "env": {}, "indent": len(item.group(1)) + 2}
            if item.group(2) == "uses":
                current["name"] = "uses " + item.group(3)
        run = re.match(r"^(\s*)run: (.*)$", line)
        env = re.match(r"^(\s*)env:\s*$", line)
        if env and current is not None:
            depth = len(env.group(1))
            index += 1
            while index < len(lines) and len(lines[index]) - len(lines[index].lstrip()) > depth:
                key, _, value = lines[index].strip().partition(": ")
                current["env"][key] = _unquote(value)  # type: ignore[index]
                index += 1
            continue
        if run and current is not None:
            depth = len(run.group(1))
            if run.group(2).strip() == "|":
                body = []
                index += 1
                while index < len(lines) and (
                    not lines[index].strip()
                    or len(lines[index]) - len(lines[index].lstrip()) > depth
                ):
                    body.append(lines[index][depth + 2 :])
                    index += 1
                script = "\n".join(body) + "\n"
            else:
                script = _unquote(run.group(2)) + "\n"
                index += 1
            steps.append(ShellStep(str(current["name"]), script, dict(current["env"])))  # type: ignore[call-overload]
            continue
        index += 1
    return steps


def gitlab_job(block: str) -> ShellStep:
    """The job's `script:` lines joined into one shell script, with its `variables:`."""
    variables: dict[str, str] = {}
    script: list[str] = []
    section = ""
    for line in block.splitlines():
        header = re.match(r"^  (\w+):\s*$", line)
        if header:
            section = header.group(1)
            continue
        if section == "variables" and line.startswith("    ") and ": " in line:
            key, _, value = line.strip().partition(": ")
            variables[key] = _unquote(value)
        elif section == "script" and line.startswith("    - "):
            script.append(_unquote(line[len("    - ") :]))
    return ShellStep("gitlab", "\n".join(script) + "\n", variables)
