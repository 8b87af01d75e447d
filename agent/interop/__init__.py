"""Interop with the tools a project already uses (MLflow, DVC)."""
