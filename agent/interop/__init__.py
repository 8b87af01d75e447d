"""Interoperability with tools people already use: MLflow tracking and DVC pipelines."""
