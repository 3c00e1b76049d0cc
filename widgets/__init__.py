"""ipywidgets apps for ProMedical Kit: the clinician rubric reviewer (``widgets.reviewer``, notebook 02)
and the team review app (``widgets.team``, ``promedical review``)."""
