"""A repo's `watchkeeper.toml`: the models it declares and the git state they are built from."""

from agent.project.spec import ModelSpec, ProjectSpec, load_project

__all__ = ["ModelSpec", "ProjectSpec", "load_project"]
