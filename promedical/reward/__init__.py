"""Stage 03: candidates, the judge, labels, criterion-expanded pairs and the Explicit Criteria Injection
reward model — its scorer, its training and its evaluation (notebook 03)."""
