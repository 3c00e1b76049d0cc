"""Stage 05: the held-out benchmark — answers, independent graders, the comparison with CIs and the
report (notebook 05)."""
