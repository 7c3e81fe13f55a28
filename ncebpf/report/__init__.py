"""Reports over dumps: who used the link, by prefix, by domain or by peer (spec §11).

model (the data), sources (dump files and the running instance), aggregate
(pure: the groups), render_text / render_html / render_json (pure: the
formats).
"""

from __future__ import annotations

from ncebpf.report.model import Report

FORMATS = ("text", "html", "json")
MEDIA_TYPES = {"text": "text/plain; charset=utf-8", "html": "text/html; charset=utf-8",
               "json": "application/json"}


def render(report: Report, fmt: str) -> str:
    """The report in format fmt (FORMATS). Raises KeyError for another format."""
    if fmt == "text":
        from ncebpf.report.render_text import render_text

        return render_text(report)
    if fmt == "html":
        from ncebpf.report.render_html import render_html

        return render_html(report)
    if fmt == "json":
        from ncebpf.report.render_json import render_json

        return render_json(report)
    raise KeyError(fmt)
