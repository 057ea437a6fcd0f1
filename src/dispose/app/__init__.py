"""``dispose app``: a local web page (Gradio) around the in-memory engine.

:mod:`.state` holds what the page computes (no Gradio there: settings, the process-wide model cache, guidance
previews, animations written to files), :mod:`.ui` the page itself.  Nothing here re-implements a stage: poses
and guidance come from :func:`dispose.guidance.stage.compute_guidance`, animation from
:class:`dispose.engine.Animator`.
"""
