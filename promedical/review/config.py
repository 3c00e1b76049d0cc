"""Stage 02's typed config (batch review)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from promedical.core.config import ConfigMixin, one_of, option

REVIEW_POLICIES = ("approve-valid",)


@dataclass
class ReviewStepConfig(ConfigMixin):
    """02 in batch mode: apply a reviews file and/or a policy to the drafts, export the approved rubrics."""

    STEP: ClassVar[str] = "review"
    reviewer: str = option("the name recorded on every revision this run makes", "demo-clinician")
    reviews_file: str | None = option("JSONL of review records, applied unattended", None)
    policy: str | None = option("unattended policy for the remaining drafts: " + " | ".join(REVIEW_POLICIES), None)

    def checks(self):
        if self.policy is not None:
            yield from one_of("policy", self.policy, REVIEW_POLICIES)
        if not self.reviewer.strip():
            yield "reviewer: must not be empty"
