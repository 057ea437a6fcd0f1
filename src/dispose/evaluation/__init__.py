"""Video quality metrics of the paper's tables (frame metrics, FVD family, VBench dimensions)."""
