"""DisPose's disentangled guidance: motion fields (paper sec. 4.1) and keypoint correspondence (sec. 4.2).

Motion fields: :mod:`.trajectories` (``P_traj``), :mod:`.sparse_field` (``F_s``, Eq. 3),
:mod:`.reference_flow` (``P_d``, Eq. 4), :mod:`.cmp` (``F_d`` by CMP, as the release),
:mod:`.propagation` (a weight-free ``F_d``), :mod:`.motion_fields` (``F_d`` of one video),
:mod:`.optical_flow` and :mod:`.watershed` (training-time ``P_d``, appendices A and D),
:mod:`.flow_pictures` and :mod:`.pictures` (colour code, arrows, the panels).  Correspondence: :mod:`.dift`,
:mod:`.correspondence`.  :mod:`.stage`: all of it as one stage (compute once, save, load, slice per tile).
"""
