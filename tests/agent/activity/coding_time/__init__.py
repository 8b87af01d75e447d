"""Tests of agent.activity.coding_time: binning, baselines, the model and its estimates."""
