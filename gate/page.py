"""The gate's HTML report, the page a runbook author fixes the runbook from: one card per procedure
(its verdict, the fault it ran under), each defect its own item (kind, the runbook line in context,
what was observed, the repair). Japanese by default, as the REC reports; English on request.
"""

from __future__ import annotations

import html

from gate.findings import CANNOT_FAIL, CANNOT_RUN, DESTROYS, KINDS, UNSAFE, WORDING, Card, Finding
from reports.i18n import words

GATE_TEXT: dict[str, dict[str, str]] = {
    "ja": {
        "title": "手順書ゲート", "runbook": "手順書", "checked": "検査日時", "took": "所要時間",
        "procedures": "手順", "defects": "不備", "ran_under": "実行条件", "line": "{n} 行目",
        "observed": "観測結果", "repair": "修正", "none": "不備なし", "behind": "最初の不備の後ろで発見",
        "partial": "一部のみ実行 (選択されなかった手順があります)", "seconds": "{s} 秒",
        "corrected_lines": "修正版の該当行", "count": "{n} 件",
        DESTROYS: "データを失う", UNSAFE: "不正なバックアップで危険",
        CANNOT_RUN: "書かれたとおりには実行できない", CANNOT_FAIL: "失敗し得ない確認", WORDING: "記述",
    },
    "en": {
        "title": "Runbook gate", "runbook": "Runbook", "checked": "Checked at", "took": "Took",
        "procedures": "Procedures", "defects": "Defects", "ran_under": "Ran under", "line": "line {n}",
        "observed": "Observed", "repair": "Repair", "none": "no defect", "behind": "behind the first defect",
        "partial": "partial run (some procedures not selected)", "seconds": "{s} s",
        "corrected_lines": "the corrected runbook's lines", "count": "{n}",
        DESTROYS: "destroys data", UNSAFE: "unsafe under a bad backup", CANNOT_RUN: "cannot run as written",
        CANNOT_FAIL: "check that cannot fail", WORDING: "wording",
    },
}
KIND_CLASS = {DESTROYS: "destroys", UNSAFE: "unsafe", CANNOT_RUN: "cannot-run", CANNOT_FAIL: "cannot-fail",
              WORDING: "wording"}

STYLE = """
body{font-family:"IPAGothic","Noto Sans CJK JP",sans-serif;max-width:72em;margin:2em auto;padding:0 1em;
color:#1f2328;background:#f6f8fa}
header{background:#fff;border-radius:8px;padding:1em 1.5em;box-shadow:0 1px 3px #0002;margin-bottom:1.5em}
.verdict{display:inline-block;padding:.2em .8em;border-radius:1em;color:#fff;font-weight:bold}
.passed .verdict,.verdict.passed{background:#1a7f37}.failed .verdict,.verdict.failed{background:#cf222e}
.tally span{display:inline-block;margin:.2em .4em .2em 0;padding:.1em .6em;border-radius:1em;font-size:.9em}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px #0002;margin:1em 0;padding:.8em 1.2em;
border-left:6px solid #1a7f37}.card.failed{border-left-color:#cf222e}
.card h2{font-size:1.15em;margin:.2em 0}.meta{color:#59636e;font-size:.9em}
.defect{border:1px solid #d0d7de;border-radius:6px;margin:.8em 0;padding:.6em .9em}
.kind{display:inline-block;padding:.1em .6em;border-radius:1em;font-size:.85em;font-weight:bold}
.destroys{background:#ffebe9;color:#a40e26}.unsafe{background:#fff1e5;color:#953800}
.cannot-run{background:#fff8c5;color:#7d4e00}.cannot-fail{background:#ddf4ff;color:#0550ae}
.wording{background:#eaeef2;color:#424a53}.behind{margin-left:.5em;font-size:.85em;color:#8250df}
pre{background:#f6f8fa;border-radius:6px;padding:.5em .8em;overflow-x:auto;font-size:.85em;margin:.3em 0}
pre span{display:block;min-height:1.2em}pre .hit{background:#fff8c5}
dt{font-weight:bold;margin-top:.4em}dd{margin:.1em 0 .3em 1em}
details summary{cursor:pointer;color:#0969da}
"""


def render(runbook: str, verdict: str, passed: bool, made_at: str, seconds: float, partial: bool,
           cards: list[Card], lang: str = "ja") -> str:
    t, common = GATE_TEXT[lang], words(lang)
    esc = html.escape
    every = [f for c in cards for f in c.findings]
    tally = "".join(f"<span class='{KIND_CLASS[k]}'>{esc(t[k])}: {t['count'].format(n=n)}</span>"
                    for k in KINDS if (n := sum(1 for f in every if f.kind == k)))
    state = "passed" if passed else "failed"
    head = (f"<header class='{state}'><h1>{esc(t['title'])}: <span class='verdict'>"
            f"{esc(common['passed'] if passed else common['failed'])}</span></h1>"
            f"<p class='meta'>{esc(t['runbook'])}: {esc(runbook)}<br>{esc(t['checked'])}: {esc(made_at)}, "
            f"{esc(t['took'])}: {esc(t['seconds'].format(s=f'{seconds:g}'))}"
            f"{'<br>' + esc(t['partial']) if partial else ''}<br><small>{esc(verdict)}</small></p>"
            f"<p class='tally'>{esc(t['defects'])}: {t['count'].format(n=len(every))} {tally}</p></header>")
    body = "".join(_card(card, t, common) for card in cards)
    return (f"<!doctype html><html lang='{lang}'><head><meta charset='utf-8'><title>{esc(t['title'])}"
            f"</title><style>{STYLE}</style></head><body>{head}<h2>{esc(t['procedures'])}</h2>{body}"
            "</body></html>\n")


def _card(card: Card, t: dict[str, str], common: dict[str, str]) -> str:
    esc = html.escape
    items = "".join(_defect(f, t) for f in card.findings) or f"<p class='meta'>{esc(t['none'])}</p>"
    return (f"<section class='card {esc(card.verdict)}'><h2>{esc(card.procedure)} <span class='verdict "
            f"{esc(card.verdict)}'>{esc(common.get(card.verdict, card.verdict))}</span></h2>"
            f"<p class='meta'>{esc(t['ran_under'])}: {esc(card.ran_under)} · "
            f"{esc(t['seconds'].format(s=f'{card.seconds:g}'))}</p>{items}</section>")


def _defect(f: Finding, t: dict[str, str]) -> str:
    esc = html.escape
    where = f"{esc(f.section)}" + (f" · {esc(t['line'].format(n=f.line))}" if f.line else "")
    context = "".join(f"<span class='{'hit' if n == f.line else ''}'>{n:>4}  {esc(text)}</span>"
                      for n, text in f.context)
    repair = esc(f.repair)
    if f.repair_lines:
        shown = "\n".join(f"{n:>4}  {esc(text)}" for n, text in f.repair_lines)
        repair += f"<details><summary>{esc(t['corrected_lines'])}</summary><pre>{shown}</pre></details>"
    behind = f"<span class='behind'>{esc(t['behind'])}</span>" if f.behind_first else ""
    kind = f"<span class='kind {KIND_CLASS[f.kind]}'>{esc(t[f.kind])}</span>"
    shown = f"<pre>{context}</pre>" if context else ""
    return (f"<article class='defect'>{kind}{behind} <span class='meta'>{where}</span>{shown}"
            f"<dl><dt>{esc(t['observed'])}</dt><dd>{esc(f.observed)}</dd>"
            f"<dt>{esc(t['repair'])}</dt><dd>{repair}</dd></dl></article>")
