"""The kit's front doors: the command line (`promedical ...`), the demo runner, the notebook runner and the
team-review server. Nothing below `app` imports it."""
