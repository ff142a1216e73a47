"""Pytest plugin: every drill record of a session becomes a REC report; the run gets its index.

- At each test's teardown, the records that test wrote (<reports>/records/*.json with its node id as
  drill_id) are numbered and rendered where the test ran (an xdist worker, or the main process), and
  scanned with the secrets of the test's stack, which never leave that process.
- At session end, the controller renders any record of this session not rendered yet, writes the
  compliance index and the manifest into <reports>/runs/<run id>/, and fails the session when a
  report could not be made or a secret was found.
- With pytest-html 4: a REC column (verdict and link), the timeline under each drill's row, and a
  recovery summary per drill above the table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import pytest

from reports import history, signing, timeline
from reports import session as run_session
from reports.i18n import LANGS, duration, loss_text, words
from reports.model import DrillRecord

log = logging.getLogger(__name__)

OPTIONS = {
    "drill_report_lang": ("language of REC reports: ja (default) or en", "ja"),
    "drill_runbook": (
        "the runbook file whose revision and SHA-256 go into the reports "
        "(default: the first 15_復旧手順*.md in the project)",
        None,
    ),
    "drill_history": (
        "SQLite file of every drill result of every run (default: <reports>/history.sqlite)",
        None,
    ),
    "drill_regression_factor": (
        "a passing drill whose recovery time is over this many times the median of its last five passing "
        "runs is flagged as a regression",
        str(history.REGRESSION_FACTOR),
    ),
    "drill_signing_key": (
        "Ed25519 private key (PEM) that signs each run's manifest (python -m reports keygen)",
        None,
    ),
}


CELL = 'style="border:1px solid #dde3ec;padding:4px 10px;text-align:left"'


@dataclass
class State:
    run_id: str
    started: float  # records written at or after this (time.time()) belong to the session
    lang: str
    runbook: str | None
    reports_dir: Path
    is_worker: bool
    options: run_session.RunOptions = field(default_factory=run_session.RunOptions)
    recs: list[dict[str, Any]] = field(default_factory=list)  # REC summaries, in arrival order
    by_node: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    nodeids: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    result: run_session.RunResult | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mks-drill")
    for name, (help_text, default) in OPTIONS.items():
        group.addoption("--" + name.replace("_", "-"), dest=name, default=None, help=help_text)
        parser.addini(name, help_text, default=default)


def _setting(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(name, None)
    if value is None:
        try:
            value = config.getini(name)
        except ValueError:
            value = None
    return str(value) if value not in (None, "") else None


def reports_dir(config: pytest.Config) -> Path:
    # the same resolution as fixtures.stack.plugin's reports_dir fixture, which hooks cannot request
    folder = Path(_setting(config, "drill_reports") or "reports/out")
    return folder if folder.is_absolute() else config.rootpath / folder


def pytest_configure(config: pytest.Config) -> None:
    lang = _setting(config, "drill_report_lang") or "ja"
    if lang not in LANGS:
        raise pytest.UsageError(f"--drill-report-lang must be one of {', '.join(LANGS)}, not {lang!r}")
    worker = getattr(config, "workerinput", None)
    run_id = worker.get("drill_run_id") if worker else None
    started = (
        float(worker["drill_run_started"]) if worker and "drill_run_started" in worker else time.time() - 1
    )
    folder = reports_dir(config)
    state = State(
        run_id=run_id or run_session.new_run_id(),
        started=started,
        lang=lang,
        runbook=_setting(config, "drill_runbook"),
        reports_dir=folder,
        is_worker=worker is not None,
        options=run_options(config, folder, load_key=worker is None),
    )
    config.pluginmanager.register(DrillReports(config, state), "mks-drill-reports")


def run_options(config: pytest.Config, folder: Path, load_key: bool) -> run_session.RunOptions:
    """The run's selection, history file, regression factor, signing key and identity, from its settings."""
    text = _setting(config, "drill_regression_factor") or str(history.REGRESSION_FACTOR)
    try:
        factor = float(text)
    except ValueError:
        factor = 0.0
    if not factor > 0:
        raise pytest.UsageError(f"--drill-regression-factor must be a number above 0, not {text!r}")
    configured = _setting(config, "drill_history")
    path = None
    if configured:
        path = Path(configured) if Path(configured).is_absolute() else config.rootpath / configured
    key = None
    key_file = _setting(config, "drill_signing_key")
    if key_file and load_key:
        try:
            key = signing.load_private(Path(key_file).expanduser(), folder)
        except signing.SigningError as exc:
            raise pytest.UsageError(f"--drill-signing-key: {exc}") from None
    args = [str(a) for a in getattr(config, "args", [])]
    return run_session.RunOptions(
        markexpr=getattr(config.option, "markexpr", "") or None,
        ad_hoc=bool(getattr(config.option, "keyword", "")) or any("::" in a for a in args),
        history=path,
        regression_factor=factor,
        signing_key=key,
        identity={
            "provider": _setting(config, "drill_provider") or "local",
            "app_profile": _setting(config, "drill_app") or "reference",
            "scale": _setting(config, "drill_scale") or "1",
        },
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        runbook=_setting(config, "drill_runbook"),
    )


def _known_secrets(item: pytest.Item) -> list[str]:
    """The generated secrets of the stacks the test used (fixture values with .secrets.values())."""
    found: list[str] = []
    for value in getattr(item, "funcargs", {}).values():
        secrets = getattr(value, "secrets", None)
        if secrets is not None and callable(getattr(secrets, "values", None)):
            found += [str(s) for s in secrets.values()]
    return found


def _unrendered(state: State) -> list[Path]:
    if not state.reports_dir.is_dir():
        return []
    done = run_session.rendered_sources(state.reports_dir)
    return [
        p
        for p in run_session.record_files(state.reports_dir, state.started)
        if hashlib.sha256(p.read_bytes()).hexdigest() not in done
    ]


class DrillReports:
    def __init__(self, config: pytest.Config, state: State):
        self.config = config
        self.state = state

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: workers share the controller's run id and start time."""
        node.workerinput["drill_run_id"] = self.state.run_id
        node.workerinput["drill_run_started"] = self.state.started

    def _render(self, nodeid: str | None, secrets: list[str]) -> list[dict[str, Any]]:
        out = []
        for path in _unrendered(self.state):
            drill_id = run_session.drill_id_of(path)
            if nodeid is not None and drill_id != nodeid:
                continue
            if nodeid is None and drill_id not in self.state.nodeids:
                continue  # another session's drill, or not a drill record
            out.append(
                run_session.render_one(
                    path,
                    self.state.reports_dir,
                    lang=self.state.lang,
                    run_id=self.state.run_id,
                    secrets=secrets,
                    runbook=self.state.runbook,
                )
            )
        return out

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.when == "teardown":
            try:
                recs = self._render(item.nodeid, _known_secrets(item))
            except Exception as exc:  # a broken record must not hide the test's own outcome
                log.exception("REC report for %s failed", item.nodeid)
                recs = [{"drill_id": item.nodeid, "error": f"{type(exc).__name__}: {exc}"}]
            self._history(recs)
            if recs:
                report.drill_rec = recs
        return report

    def _history(self, recs: list[dict[str, Any]]) -> None:
        """The results go into the history where they were rendered (each xdist worker writes its own);
        a refused history is reported by the controller at the session's end."""
        done = [r for r in recs if "error" not in r]
        if not done:
            return
        try:
            run_session.record_results(self.state.reports_dir, self.state.run_id, done, self.state.options)
        except history.HistoryError as exc:
            log.error("drill history not written: %s", exc)

    def _accept(self, nodeid: str, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        accepted = []
        for rec in recs:
            if "error" in rec:
                self.state.errors.append(f"{rec['drill_id']}: {rec['error']}")
                continue
            if rec.get("scan_findings"):
                self.state.errors.append(f"{rec['rec_id']}: {rec['scan_findings']} secret-like findings")
            self.state.recs.append(rec)
            self.state.by_node.setdefault(nodeid, []).append(rec)
            accepted.append(rec)
        return accepted

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # runs before pytest-html's own (trylast), so its row and extras can use what is stored here
        self.state.nodeids.add(report.nodeid)
        recs = getattr(report, "drill_rec", None)
        if recs and not self.state.is_worker:
            self._add_html_extras(report, self._accept(report.nodeid, recs))

    def link(self, relative: str) -> str | None:
        """A path relative to the pytest-html report, when there is one."""
        html_path = getattr(self.config.option, "htmlpath", None)
        if not html_path:
            return None
        return os.path.relpath(self.state.reports_dir / relative, Path(html_path).resolve().parent)

    def _add_html_extras(self, report: pytest.TestReport, recs: list[dict[str, Any]]) -> None:
        if not recs or not self.config.pluginmanager.hasplugin("html"):
            return
        from pytest_html import extras

        added = list(getattr(report, "extras", []))
        for rec in recs:
            link = self.link(rec["files"]["html"])
            if link:
                added.append(extras.url(link, name=rec["rec_id"]))
            try:
                document = run_session.load_rec(self.state.reports_dir, rec["rec_id"])
                picture = timeline.svg(DrillRecord.from_dict(document["record"]), self.state.lang)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                picture = f"<p>{escape(str(exc))}</p>"
            added.append(
                extras.html(
                    f'<div class="drill-timeline"><p><strong>{escape(rec["rec_id"])}</strong>'
                    f"</p>{picture}</div>"
                )
            )
        report.extras = added

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        state = self.state
        if state.is_worker:
            return
        try:
            for rec in self._render(None, []):
                self._accept(rec["drill_id"], [rec])
            if state.recs:
                earlier = sum(int(r.get("scan_findings", 0)) for r in state.recs)
                state.result = run_session.finish_run(
                    state.reports_dir,
                    state.run_id,
                    [r["rec_id"] for r in state.recs],
                    lang=state.lang,
                    earlier_findings=earlier,
                    options=state.options,
                )
                state.errors += state.result.errors
                if len(state.result.findings):
                    state.errors.append(
                        f"{len(state.result.findings)} secret-like findings in the run's artifacts"
                    )
        except Exception as exc:
            log.exception("closing the run's reports failed")
            state.errors.append(f"run reports: {type(exc).__name__}: {exc}")
        if state.errors and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = self.state
        if state.is_worker or not (state.recs or state.errors):
            return
        w = words(state.lang)
        terminalreporter.write_sep("-", "REC reports")
        for rec in state.recs:
            terminalreporter.write_line(
                f"{rec['rec_id']}  {w.get(rec['verdict'], rec['verdict'])}  "
                f"{duration(rec.get('recovery_seconds'), state.lang)}  {rec['drill_id']}  "
                f"{state.reports_dir / rec['files']['html']}"
            )
        if state.result:
            result = state.result
            terminalreporter.write_line(f"index: {result.index[-1]}")
            if result.coverage is not None:
                cov = result.coverage
                terminalreporter.write_line(
                    f"claims: {', '.join(cov.claimed) or 'no schedule'}"
                    f"{' (partial run)' if cov.partial else ''}; "
                    f"selected: {', '.join(cov.selected) or 'none'}"
                )
            for name in ("oscal", "metrics", "history"):
                if name in result.outputs:
                    terminalreporter.write_line(f"{name}: {result.outputs[name]}")
            signed = (
                f"signed: {result.signature}" if result.signature else "UNSIGNED (no --drill-signing-key)"
            )
            terminalreporter.write_line(
                f"manifest: {result.manifest}  {signed}  (verify: python -m reports verify {result.folder})"
            )
        for error in state.errors:
            terminalreporter.write_line(f"REC ERROR: {error}", red=True)

    # ---- pytest-html 4 --------------------------------------------------------------------------
    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells.insert(2, "<th>REC</th>")

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_table_row(self, report: pytest.TestReport, cells: list[str]) -> None:
        w = words(self.state.lang)
        parts = []
        for rec in self.state.by_node.get(report.nodeid, []):
            link = self.link(rec["files"]["html"])
            name = escape(rec["rec_id"])
            anchor = f'<a href="{escape(link)}" target="_blank">{name}</a>' if link else name
            passed = rec["verdict"] == "passed"
            parts.append(
                f'<span class="drill-verdict {escape(rec["verdict"])}" style="font-weight:600;color:'
                f'{"#2e9e5b" if passed else "#d64545"}">{"✔" if passed else "✘"} '
                f"{escape(w.get(rec['verdict'], rec['verdict']))}</span> {anchor}"
            )
        cells.insert(2, f'<td class="col-rec">{"<br>".join(parts)}</td>')

    @pytest.hookimpl(optionalhook=True)
    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str], session: pytest.Session
    ) -> None:
        state = self.state
        if not state.recs:
            return
        w = words(state.lang)
        rows = []
        for rec in state.recs:
            link = self.link(rec["files"]["html"])
            name = f'<a href="{escape(link)}">{escape(rec["rec_id"])}</a>' if link else escape(rec["rec_id"])
            loss = loss_text(rec.get("data_loss_rows"), rec.get("data_loss_seconds"), state.lang)
            colour = "#2e9e5b" if rec["verdict"] == "passed" else "#d64545"
            cells = [
                name,
                escape(rec["scenario"]),
                f'<b style="color:{colour}">{escape(w.get(rec["verdict"], rec["verdict"]))}</b>',
                escape(rec["level"]),
                escape(duration(rec.get("recovery_seconds"), state.lang)),
                escape(loss),
            ]
            rows.append("<tr>" + "".join(f"<td {CELL}>{c}</td>" for c in cells) + "</tr>")
        index = ""
        if state.result:
            link = self.link(str(state.result.index[-1].relative_to(state.reports_dir)))
            if link:
                index = f'<p><a href="{escape(link)}">{escape(w["index_title"])}</a></p>'
        head = "".join(
            f"<th {CELL}>{escape(h)}</th>"
            for h in ("REC", w["scenario"], w["verdict"], w["level"], w["recovery_time"], w["data_loss"])
        )
        prefix.append(
            f'<div class="drill-summary"><h2>{escape(w["drills"])}</h2>'
            '<table id="drill-summary" style="border-collapse:collapse">'
            f"<tr>{head}</tr>{''.join(rows)}</table>{index}</div>"
        )
