"""``marble leaderboard build``: the leaderboard repository as a static, self-contained website.

``index.html`` holds the MARBLE table (reported and toolkit rows side by side: per-task scores, the
MARBLE score, per-category averages, mean ± 95 % CI where seeds exist), sortable by any column and shown
one track at a time (the constrained track first; an unconstrained, fine-tuned row is never ranked among the frozen
probes unless the reader asks for all tracks); ``models/<entry>.html`` holds one model's facts (model.json, the result
manifests: toolkit version, card versions, encoder hash) and its layer-wise plots. CSS and script are
inline and nothing is fetched at view time, so the folder works from disk or any static host.
"""

from __future__ import annotations

import html
import math
import os
import re
from pathlib import Path

from marble.leaderboard.repo import LOCAL, Entry, category_scores, entry_rows, load_repo, local_entries
from marble.leaderboard.repo import categories as repo_categories
from marble.leaderboard.render import TOP
from marble.leaderboard.significance import RULE
from marble.results.selection import describe

ESC = html.escape

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin-top:28px} .sub{color:#555;margin:0 0 14px}
table{border-collapse:separate;border-spacing:0;font-size:13px} th,td{padding:4px 7px;border-bottom:1px solid #e4e4e4;white-space:nowrap}
th{background:#f5f5f7;position:sticky;top:0} td.num,th.num{text-align:right}
th.sortable{cursor:pointer;user-select:none} th.sorted-asc::after{content:" ▲"} th.sorted-desc::after{content:" ▼"}
tr.reported td{color:#555} tr.reported td.model a{color:#555}
tr.local td{background:#fff8e1} .local-tag{color:#a15c00;font-size:11px;font-weight:bold;margin-left:4px}
.unofficial{background:#fff8e1;border:1px solid #f0c36d;padding:6px 10px;display:inline-block}
td.marble{font-weight:bold} .ci{color:#888;font-size:11px} .cat{background:#fbfbfe} .muted{color:#888}
.controls{margin:10px 0 14px} .controls label{margin-right:14px} .wrap{overflow-x:auto;max-width:100%}
#leaderboard td.model,#leaderboard th:first-child{position:sticky;left:0;z-index:1;background:#fff;box-shadow:1px 0 0 #e4e4e4}
#leaderboard th:first-child{z-index:2;background:#f5f5f7} tr.local td.model{background:#fff8e1}
td.long{white-space:normal;max-width:360px} table.results td{vertical-align:top}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:3px 14px;font-size:14px} dt{color:#555}
.plots{display:flex;flex-wrap:wrap;gap:18px} .plots img{max-width:100%;height:auto} code{font-size:12px}
figcaption{font-size:12px;color:#666;max-width:800px}
.tie{color:#b8860b;font-weight:bold;cursor:help} a.probe{font-size:10px;margin-left:4px;color:#2a6ebb}
"""

SCRIPT = r"""
(function () {
  var table = document.getElementById('leaderboard');
  var body = table.tBodies[0];
  function value(row, col) {
    var v = row.cells[col].getAttribute('data-value');
    if (v === null || v === '') return null;
    var n = Number(v);
    return isNaN(n) ? v.toLowerCase() : n;
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
    if (!th.classList.contains('sortable')) return;
    th.addEventListener('click', function () {
      var desc = !th.classList.contains('sorted-desc');
      if (th.getAttribute('data-type') === 'text' && !th.classList.contains('sorted-asc')) desc = false;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(desc ? 'sorted-desc' : 'sorted-asc');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = value(a, col), y = value(b, col);
        if (x === null && y === null) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        var c = x < y ? -1 : x > y ? 1 : 0;
        return desc ? -c : c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  var filter = document.getElementById('track-filter');
  function applyFilter() {
    var t = filter.value, shown = 0;
    Array.prototype.forEach.call(body.rows, function (r) {
      var show = t === 'all' || r.getAttribute('data-track') === t;
      r.hidden = !show;
      if (show) shown += 1;
    });
    document.getElementById('row-count').textContent = shown + ' of ' + body.rows.length + ' rows';
  }
  filter.addEventListener('change', applyFilter);
  applyFilter();
})();
"""


def _page(title: str, body: str, script: str = "") -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{ESC(title)}</title><link rel=\"icon\" href=\"data:,\"><style>{CSS}</style></head>\n<body>\n{body}\n"
            + (f"<script>{script}</script>\n" if script else "") + "</body></html>\n")


def _num(v: float | None, digits: int = 1) -> tuple[str, str]:
    """(data-value, shown text) of a number; missing -> ('', '-')."""
    if v is None or not math.isfinite(v):
        return "", "-"
    return f"{v:.6g}", f"{v:.{digits}f}"


def page_name(entry: Entry) -> str:
    return f"models/{entry.id}.html"


def _ci_half(result: dict, card) -> float | None:
    """Half-width of the seeds' 95 % CI on the task-score scale (the seeded metric's share of the score)."""
    from marble.metrics import SCALE
    from marble.metrics.aggregate import aggregate_metrics

    seeds = result.get("seeds") or {}
    ci = seeds.get("ci95")
    if not ci:
        return None
    agg = aggregate_metrics(card, reported=result["source"] == "reported")
    if seeds["metric"] not in agg:
        return None
    # ci95 is clipped to the metric's range (report.seed_summary): the unclipped side is the half-width
    mean = seeds.get("mean")
    half = max(ci[1] - mean, mean - ci[0]) if isinstance(mean, (int, float)) else (ci[1] - ci[0]) / 2
    return half * SCALE[seeds["metric"]] / len(agg)


def _tie_html(tie) -> tuple[str, str]:
    """(title attribute of the cell, marker) of a tie group: the top group shows the marker, every cell with a
    group or without one explains itself in its tooltip."""
    if tie is None:
        return "", ""
    title = f' title="{ESC(tie.describe())}"'
    return title, (f'<span class="tie" title="{ESC(tie.describe())}">{TOP}</span>' if tie.group else "")


def probe_href(entry: Entry, result: dict) -> str | None:
    """Where the site keeps a result's shipped probe (``probes/<entry>/<task>/<file>``), if it has one."""
    rec = (result.get("artifacts") or {}).get("probe")
    return None if rec is None else f"probes/{entry.id}/{result['task']}/{rec['file']}"


def _index(cfg: dict, pairs, tasks: list[str], cards: dict, bench: list[str], local: str | None = None) -> str:
    categories = {k: v for k, v in repo_categories(cfg).items() if v}
    from marble.results import TRACKS

    # one track at a time (constrained first): an unconstrained (fine-tuned) row is never ranked among frozen probes
    tracks = [t for t in TRACKS if any(row.track == t for _, row in pairs)]
    tracks += sorted({row.track for _, row in pairs} - set(tracks))
    head = ['<th class="sortable" data-type="text">Model</th>', '<th class="sortable" data-type="text">Source</th>',
            '<th class="sortable" data-type="text">Track</th>',
            f'<th class="sortable num" title="mean of the {len(bench)} task scores, given only when all exist">MARBLE</th>']
    head += [f'<th class="sortable num cat" title="{ESC(", ".join(ts))}">{ESC(name)}</th>' for name, ts in categories.items()]
    head += [f'<th class="sortable num" title="{ESC(cards[t].name)}">{ESC(t)}</th>' for t in tasks]
    rows = []
    for entry, row in pairs:
        results = {r["task"]: r for _, r in entry.results if r["track"] == row.track}
        ms_v, ms_t = _num(row.marble_score)
        ms_title = ""
        published = entry.info.get("published_average")
        if row.source == "reported" and published is not None:
            ms_v, ms_t = _num(published)
            ms_title = (f' title="published average; the mean of the published (rounded) task scores is '
                        f'{_num(row.marble_score, 2)[1]}"')
        tie_title, tie_mark = _tie_html(row.marble_tie)
        ms_title = ms_title or tie_title
        is_local = row.source == LOCAL
        tag = ' <span class="local-tag" title="a local result, not on the leaderboard">unofficial</span>' if is_local else ""
        cells = [f'<td class="model" data-value="{ESC(row.model)}"><a href="{ESC(page_name(entry))}">{ESC(row.model)}</a>{tag}</td>',
                 f'<td data-value="{row.source}">{"local (unofficial)" if is_local else row.source}</td>', f'<td data-value="{row.track}">{row.track}</td>',
                 f'<td class="num marble" data-value="{ms_v}"{ms_title}>{ms_t}{tie_mark}</td>']
        for name, v in category_scores(row, categories).items():
            dv, txt = _num(v)
            cells.append(f'<td class="num cat" data-value="{dv}">{txt}</td>')
        for t in tasks:
            c = row.cells.get(t)
            dv, txt = _num(c.score if c else None)
            extra, title = "", ""
            if c is not None:
                title, mark = _tie_html(c.tie)
                extra += mark
            if c is not None and t in results:
                half = _ci_half(results[t], cards[t])
                if half is not None:
                    extra += f' <span class="ci" title="95% CI over {c.n_seeds} seeds">±{half:.1f}</span>'
                if c.deviations:
                    extra += ' <span title="reduced protocol">*</span>'
                href = probe_href(entry, results[t])
                if href:
                    extra += (f'<a class="probe" href="{ESC(href)}" title="the selected probe of this cell (safetensors): '
                              f'marble predict --probe FILE --model MODEL AUDIO...">probe</a>')
            cells.append(f'<td class="num" data-task="{ESC(t)}" data-value="{dv}"{title}>{txt}{extra}</td>')
        rows.append(f'<tr class="{row.source}" data-track="{row.track}" data-entry="{ESC(entry.id)}">' + "".join(cells) + "</tr>")
    options = "".join(f'<option value="{t}"{" selected" if i == 0 else ""}>{t}</option>' for i, t in enumerate(tracks))
    body = f"""<h1>MARBLE leaderboard</h1>
<p class="sub">Music Audio Representation Benchmark for universaL Evaluation: encoders on {len(bench)} tasks, one track at a
time (constrained and semi-constrained: frozen encoders probed; unconstrained: fine-tuned, a row per method).
Scores ×100 (SDR in dB); task score = mean of its metrics; MARBLE = mean of the {len(bench)} task scores, shown only when all exist;
category = mean of its tasks, shown when all exist; ± = half-width of the 95% CI over seeds;
<span class="tie">{TOP}</span> = top group of the column: the best score and every score not separable from it at 95%
({ESC(RULE)}; hover a cell for its interval; published rows carry no per-item outputs, so they have no group);
<b>probe</b> = the cell's selected probe, for <code>marble predict</code>.
<b>reported</b> rows are published numbers (MARBLE paper, Table 4); <b>ours</b> rows were computed with the marble toolkit.</p>
{_local_note(local)}
<div class="controls"><label>Track <select id="track-filter">{options}<option value="all">all tracks</option></select></label>
<span id="row-count" class="muted"></span> <span class="muted">· click a column to sort</span></div>
<div class="wrap"><table id="leaderboard"><thead><tr>{"".join(head)}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table></div>
<p class="muted">Categories: {"; ".join(f"{ESC(k)} = {ESC(', '.join(v))}" for k, v in categories.items())}.</p>"""
    return _page("MARBLE leaderboard", body, SCRIPT)


def _local_note(local: str | None) -> str:
    if not local:
        return ""
    return (f'<p class="unofficial" id="local-note"><b>Unofficial rows</b>: rows marked <b>local (unofficial)</b> are '
            f'results from the folder {ESC(local)}, shown beside the leaderboard for comparison; they were not '
            'submitted or reviewed, are not ranked in the tie groups, and a reduced or incomplete result is marked *.</p>')


def _layer_figure(result: dict) -> str:
    """One result's layer plot (:func:`marble.plots.plot_layers`, the figure of ``marble plot layers``) as an
    inline SVG image; ``data-lines`` carries the plotted numbers (:func:`marble.plots.layer_data`)."""
    import base64
    import io
    import json

    from marble.plots import layer_data, plot_layers

    d = layer_data(result)
    buf = io.BytesIO()
    plot_layers(result).savefig(buf, format="svg")
    src = "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()
    lines = json.dumps({f"{lr:g}": [None if v != v else round(v, 6) for v in ys] for lr, ys in d["lines"].items()})
    sel = d["selected"]
    return (f'<figure class="layer-plot" data-task="{ESC(result["task"])}" data-layers="{ESC(json.dumps(d["layers"]))}" '
            f'data-lines="{ESC(lines)}" data-selected="{ESC(json.dumps(list(sel) if sel else None))}">'
            f'<img src="{src}" width="800" alt="{ESC(d["split"])} {ESC(d["metric"])} by layer, {ESC(result["task"])}">'
            f'<figcaption>{ESC(result["task"])}: {ESC(d["split"])} {ESC(d["metric"])} per layer and learning rate; '
            'the weighted-sum probe on its own axis (its best score dashed across the layers); the selected probe '
            '(chosen on validation) starred; the learned layer weights on the right</figcaption></figure>')


#: model.json keys as a reader names them (docs/leaderboard.md)
FACT_LABELS = {"name": "Name", "revision": "Revision", "display_name": "Display name", "parameters": "Parameters",
               "sample_rate": "Sample rate", "link": "Link", "license": "Licence", "weights_public": "Weights public",
               "track": "Track", "source": "Source", "description": "Description",
               "published_average": "Published average"}


def _fact(key: str, value) -> str:
    """One model.json value as HTML: yes/no, grouped digits, Hz, and the link clickable (http(s) only)."""
    if value is None:
        return '<span class="muted">not recorded</span>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key == "parameters" and isinstance(value, int):
        return f"{value:,}" if value else "0 (weight-free)"
    if key == "sample_rate" and isinstance(value, int):
        return f"{value:,} Hz"
    if key == "link" and isinstance(value, str) and re.match(r"https?://", value):
        return f'<a class="ext" href="{ESC(value)}" rel="noopener noreferrer">{ESC(value)}</a>'
    return ESC(str(value))


def _model_page(entry: Entry, pairs, cards: dict) -> str:
    from marble.metrics import SCALE

    info = entry.info
    local_note = (f'<p class="unofficial"><b>Unofficial</b>: local results from {ESC(str(entry.folder))}, not on the '
                  'leaderboard (not submitted or reviewed).</p>') if entry.source == LOCAL else ""
    facts = "".join(f"<dt>{ESC(FACT_LABELS.get(k, k.replace('_', ' ').capitalize()))}</dt><dd>{_fact(k, v)}</dd>"
                    for k, v in info.items() if k not in ("citation",))
    if info.get("citation"):
        facts += f"<dt>Citation</dt><dd>{ESC(info['citation'])}</dd>"
    scores = "".join(f"<dt>MARBLE ({row.track}, recomputed)</dt><dd>{_num(row.marble_score, 2)[1]}</dd>" for _, row in pairs)
    man_rows, res_rows, plots = [], [], []
    for p, r in entry.results:
        m = r.get("manifest") or {}
        enc = m.get("encoder") or {}
        enc_hash = enc.get("weights_sha256") or "-"
        man_rows.append(
            f"<tr><td>{ESC(r['task'])}</td><td>{ESC(r['track'])}</td><td class=num>{r.get('task_version', '-')}</td>"
            f"<td>{ESC(str(r.get('protocol') or '-'))}</td><td>{ESC(str(m.get('toolkit_version', '-')))}</td>"
            f"<td><code title=\"{ESC(str(enc_hash))}\">{ESC(str(enc_hash)[:16])}</code></td>"
            f"<td><code>{ESC(str(m.get('git_hash') or '-')[:12])}</code></td><td>{ESC(str(m.get('device', '-')))}</td>"
            f"<td>{ESC(str(m.get('created', '-')))}</td></tr>")
        sel = r.get("selected") or {}
        order = list(cards[r["task"]].metrics.names) if r["task"] in cards else []  # the card's order
        test = sorted(r["test"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        metrics = [(k, v * SCALE[k]) for k, v in test if v is not None] or [("-", None)]
        href = probe_href(entry, r)
        probe = f'<a class="probe" href="../{ESC(href)}">probe</a>' if href else '<span class="muted">-</span>'
        layer, lr = (str(sel.get("layer", "-")), format(sel["lr"], "g") if "lr" in sel else "-") \
            if "per_source" not in sel else (describe(r), "per source")
        span = f' rowspan="{len(metrics)}"'  # one metric a row: a task with many (MUSDB) grows down, not sideways
        for i, (name, value) in enumerate(metrics):
            lead = (f'<td{span}>{ESC(r["task"])}</td><td{span}>{ESC(r["track"])}</td>'
                    f'<td class="long"{span}>{ESC(layer)}</td><td{span}>{ESC(lr)}</td>') if i == 0 else ""
            tail = f"<td{span}>{probe}</td>" if i == 0 else ""
            shown = "-" if value is None else f"{value:.2f}"
            res_rows.append(f'<tr data-task="{ESC(r["task"])}">{lead}<td class="metric">{ESC(name)}</td>'
                            f'<td class="num">{shown}</td>{tail}</tr>')
        if r.get("sweep"):
            plots.append(_layer_figure(r))
    plot_html = ('<div class="plots">' + "".join(plots) + "</div>") if plots else \
        '<p class="muted">No layer-wise data: published numbers carry only the test scores.</p>'
    body = f"""<p><a href="../index.html">← leaderboard</a></p>
<h1>{ESC(info['display_name'])}</h1><p class="sub">{ESC(entry.id)} · source: {ESC(entry.source)}</p>{local_note}
<dl class="facts">{facts}{scores}</dl>
<h2>Results (test, selected on validation)</h2>
<div class="wrap"><table class="results"><thead><tr><th>task</th><th>track</th><th>layer</th><th>lr</th><th>test metric</th>
<th class="num">×100 / dB</th><th title="the selected probe (safetensors), for marble predict">probe</th></tr></thead>
<tbody>{"".join(res_rows)}</tbody></table></div>
<h2>Manifest</h2>
<div class="wrap"><table class="manifest"><thead><tr><th>task</th><th>track</th><th>card version</th><th>protocol</th><th>toolkit</th>
<th>encoder hash</th><th>git</th><th>device</th><th>created</th></tr></thead><tbody>{"".join(man_rows)}</tbody></table></div>
<h2>Layer-wise scores</h2>{plot_html}"""
    return _page(f"{info['display_name']} - MARBLE leaderboard", body)


def _track_order(track: str) -> int:
    from marble.results import TRACKS

    return TRACKS.index(track) if track in TRACKS else len(TRACKS)


def build_site(repo: str | os.PathLike, out: str | os.PathLike, cards: dict | None = None, *,
               local: str | os.PathLike | None = None, warnings: list[str] | None = None) -> list[Path]:
    """Read and validate the leaderboard repository ``repo`` and write the site into ``out``.
    ``local``: a results folder whose models are shown too, as rows marked unofficial (source ``local``) that
    are not ranked in the tie groups; its invalid files are left out and listed in ``warnings``.
    Returns the pages written (``index.html`` first)."""
    from marble.io import atomic_write_bytes
    from marble.leaderboard.table import _task_order, mark_ties, reference_csv_path
    from marble.results.artifacts import read_artifact
    from marble.metrics.aggregate import default_task_ids
    from marble.registry import all_cards

    cards = cards or all_cards()
    cfg, entries = load_repo(repo, cards)
    if local is not None:
        extra, notes = local_entries(local, cards)
        entries += extra
        if warnings is not None:
            warnings += notes
    bench = default_task_ids()
    pairs = entry_rows(entries, cards, bench)

    def rank(pair):
        row = pair[1]
        mean = row.mean_score()
        return (_track_order(row.track), row.marble_score is None, -(row.marble_score or 0.0), -len(row.cells),
                -(mean if mean is not None else -math.inf), row.source, row.model)

    pairs.sort(key=rank)
    mark_ties([row for _, row in pairs if row.source != LOCAL], cards, bench)
    header = reference_csv_path().read_text(encoding="utf-8").splitlines()[0].split(",")
    used = {t for _, row in pairs for t in row.cells}
    tasks = [t for t in _task_order(cards, header) if t in used]
    out = Path(out)
    written = [out / "index.html"]
    atomic_write_bytes(written[0], _index(cfg, pairs, tasks, cards, bench, None if local is None else str(local)).encode())
    for e in entries:
        p = out / page_name(e)
        atomic_write_bytes(p, _model_page(e, [pr for pr in pairs if pr[0] is e], cards).encode())
        written.append(p)
        for path, r in e.results:  # the shipped probes, so every cell's link works from the site alone
            href = probe_href(e, r)
            if href:
                atomic_write_bytes(out / href, read_artifact(path, r, "probe"))
    return written
