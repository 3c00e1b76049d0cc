"""Stage 02: clinician review of rubric drafts — one reviewer's session and batch reviews, team review
(queues, blind double reviews, adjudication, agreement, rounds) (notebooks 02 and 02b)."""
