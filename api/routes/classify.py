"""Classify a failure log on demand (the same classifier the runs use)."""

from __future__ import annotations

from fastapi import APIRouter

from metabuilder.api.deps import Viewer
from metabuilder.api.errors import responses
from metabuilder.api.routes import V2, V3
from metabuilder.api.schemas import ClassifyIn, ClassifyOut, EvidenceOut
from metabuilder.domain.classifier import classify_failure

router = APIRouter(tags=["classification"])
PATHS = (V2 + "/classify-failure", V3 + "/classify-failure")
MAX_BODY_BYTES = 8 * 1024 * 1024
"""Their bodies' limit (the API's is 4 MiB): logs of up to 5 million characters, with artifacts."""


@router.post(PATHS[0], responses=responses(401, 403, 413, 422))
@router.post(PATHS[1], responses=responses(401, 403, 413, 422))
def classify(body: ClassifyIn, principal: Viewer) -> ClassifyOut:
    """Classify a failed step's log into the 11-class taxonomy, with confidence and evidence lines."""
    signal = classify_failure(body.step_name, body.logs, list(body.artifacts), exit_code=body.exit_code)
    return ClassifyOut(
        signal_type=signal.type.value, confidence=signal.confidence, can_retry=signal.can_retry,
        requires_replan=signal.requires_replan, requires_approval=signal.requires_approval,
        retry_after_seconds=signal.retry_after, fingerprint=signal.fingerprint,
        evidence=[EvidenceOut(line=e.line, text=e.text, pattern=e.pattern) for e in signal.evidence],
        best_guess=signal.best_guess.value if signal.best_guess else None, reason=signal.reason)
