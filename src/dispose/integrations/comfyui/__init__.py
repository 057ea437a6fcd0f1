"""DisPose nodes for ComfyUI.

Install: ``pip install -e /path/to/DisPose`` with ComfyUI's Python, then link this folder into
ComfyUI's ``custom_nodes``
(``ln -s /path/to/DisPose/src/dispose/integrations/comfyui ComfyUI/custom_nodes/dispose_nodes``).
ComfyUI imports this file under a name of its own, so the nodes are imported by their package path.
"""

from dispose.integrations.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
