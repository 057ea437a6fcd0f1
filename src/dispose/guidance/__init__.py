"""DisPose's disentangled guidance: motion fields (paper sec. 4.1) and keypoint correspondence (sec. 4.2)."""
