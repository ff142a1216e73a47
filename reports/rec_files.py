"""A REC report on disk: its Markdown, HTML and JSON forms and the record it was made from.

Apart from reports/rec.py because the renderers (html, markdown) read the report that rec builds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from reports import html, markdown, numbering
from reports import rec as rec_module
from reports.rec import RecReport
from reports.secrets_scan import mask


def write(rec: RecReport, reports_dir: Path, known_secrets: Iterable[str] = ()) -> dict[str, Path]:
    """Write the three forms (each masked once more as a whole) and a copy of the source record.

    Drills overwrite records/<drill>.json on every run; the copy (verbatim unless it had to be
    masked) keeps what this REC was made from. Returns form -> path.
    """
    folder = numbering.rec_folder(reports_dir)
    folder.mkdir(parents=True, exist_ok=True)
    secrets = list(known_secrets)
    rec.files = {form: f"{numbering.REC_DIR}/{rec.rec_id}.{form}" for form in rec_module.FORMATS}
    rec.files["record"] = f"{numbering.REC_DIR}/{rec.rec_id}.record.json"
    texts = {
        "md": markdown.render(rec),
        "html": html.render(rec),
        "json": rec_module.to_json(rec),
        "record": rec.source_text,
    }
    written = {}
    for form, text in texts.items():
        path = reports_dir / rec.files[form]
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        tmp.write_text(mask(text, secrets), encoding="utf-8")
        os.replace(tmp, path)
        written[form] = path
    return written


def render_file(
    record_path: Path,
    reports_dir: Path,
    *,
    lang: str = "ja",
    run_id: str = "",
    known_secrets: Iterable[str] = (),
    runbook: str | None = None,
) -> RecReport:
    secrets = list(known_secrets)
    rec = rec_module.build(record_path, reports_dir, lang=lang, run_id=run_id, known_secrets=secrets,
                           runbook=runbook)
    write(rec, reports_dir, secrets)
    return rec
