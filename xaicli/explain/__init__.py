"""Explanation methods (one file per family), targets, baselines, model-running evaluations."""
