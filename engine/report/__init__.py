"""Showing results: plain text for the terminal, and the HTML report."""

from engine.report.html import build_diff_report, build_report
from engine.report.terminal import (
    explanation_text,
    impact_text,
    letters_text,
    run_list_text,
    run_text,
)

__all__ = [
    "build_diff_report",
    "build_report",
    "explanation_text",
    "impact_text",
    "letters_text",
    "run_list_text",
    "run_text",
]
