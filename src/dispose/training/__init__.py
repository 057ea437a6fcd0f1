"""Training DisPose: dataset preparation (``dispose prepare``), the training dataset reader, the trainer."""
