"""Sampling pipelines, one per base animation model."""
