"""Front doors for other programs (ComfyUI nodes), built on :mod:`dispose.engine` like the command line."""
