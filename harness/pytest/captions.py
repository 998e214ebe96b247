"""Captions graded as the suites grade them: against a golden's required grade, or a real model's on its
fixtures' own terms; every grade recorded for the report on request."""

from __future__ import annotations

from harness.data import goldens
from harness.pytest import results


def failures(captions: dict[str, str], fixtures, golden=None, *, record=None) -> list[str]:
    """``"ID: 'caption' (grade)"`` for each fixture whose caption falls short: of ``golden``'s required grade
    against its golden caption, or (``golden`` None: a real model) of the fixture's own terms, graded against
    its description. A fixture without a caption is graded "missing". ``record``: (config,
    configuration) to record every grade for the report."""
    graded = (
        goldens.grades(captions, golden, fixtures)
        if golden is not None
        else {
            f.id: goldens.grade(
                captions[f.id], f.description, f.must_mention, f.must_not_mention, goldens.embedder()[0]
            )
            for f in fixtures
        }
    )
    short_ones = []
    for item in fixtures:
        grade, text = graded[item.id], captions.get(item.id, "")
        if record is not None:
            config, configuration = record
            results.record_caption(
                config, item.id, configuration, golden.caption(item.id), text, grade.level, grade.describe()
            )
        short = (
            not grade.at_least(golden.required) if golden is not None else grade.missing_terms or grade.forbidden_terms
        )
        if short:
            short_ones.append(f"{item.id}: {text!r} ({grade.describe()})")
    return short_ones
