"""`python -m promedical` is the `promedical` command."""
import sys

from promedical.app.cli import main

sys.exit(main())
