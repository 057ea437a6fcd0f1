"""Whole-body poses: the keypoint container, detectors, drawing and alignment."""
