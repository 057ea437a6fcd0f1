"""``dispose benchmark``: the paper's Table 7 (speed, memory, parameters), a training step, and the paper's
quality protocol (Tables 1 and 6), each measured by one command.

Modules: :mod:`.speed`, :mod:`.train` and :mod:`.quality` (the three benchmarks); :mod:`.networks` (full-size
networks with random weights on the device, tiny test weights, Table 7's parameter counts); :mod:`.measure`
(device and library versions, peak memory, time inside each network); :mod:`.flops` and
:mod:`.train_memory` (the FLOP and training-memory predictions ``bench/cost_model.py`` and
``bench/train_memory.py`` print); :mod:`.paper` (the paper's figures); :mod:`.report` and :mod:`.chart`
(tables, JSON, bar charts).
"""
