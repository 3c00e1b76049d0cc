"""What every stage shares and no stage owns: the rubric data model and its files, scoring (pure),
HealthBench, metrics, ids, safe files, typed-config machinery, provenance, the workspace and phase reuse."""
