"""Tests of agent.project."""
