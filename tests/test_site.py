"""The static leaderboard site, built from a real leaderboard repository and tested in a real headless
browser (Debian's chromium + chromium-driver through selenium): no console error, sorting and the track
filter work, model pages show their layer-wise plots, published rows show the published averages.
Screenshots go to the test's folder (and to $MARBLE_SCREENSHOTS when set)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from marble.leaderboard.site import build_site
from marble.leaderboard.submit import submit
from marble.metrics.aggregate import default_task_ids
from marble.results.schema import REFERENCE_CSV, data_dir
from tests.leaderboard_fixtures import (GIT_ENV, beat_outputs, complete_result, git, make_leaderboard, model_info,
                                       regression_outputs, write_model)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
DRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A leaderboard with the published rows, a full 14-task constrained submission with seeds, a 2-task
    constrained one and a semi-constrained one (all merged), built into a site."""
    tmp = tmp_path_factory.mktemp("lb")
    old = {k: os.environ.get(k) for k in [*GIT_ENV, "HOME"]}
    os.environ.update(GIT_ENV, HOME=str(tmp))
    try:
        clone, _ = make_leaderboard(tmp)
        # EMO of lab/full and lab/two carries per-item test outputs (and a probe): independent errors of the same
        # size, R² 77.1 and 73.9, within the noise of 80 items
        noise = [0.5 * np.random.default_rng(s).normal(size=(80, 2)) for s in (5, 4)]
        write_model(tmp / "res", "lab/full", default_task_ids(), seeds=True,  # its gtzan-beat cell too (a beat probe)
                    outputs={"emo": regression_outputs("emo", noise[0]), "gtzan-beat": beat_outputs()})
        write_model(tmp / "res", "lab/two", ["gtzan", "emo"], offset=10.0,  # scores stay in range
                    outputs={"emo": regression_outputs("emo", noise[1])})
        semi = tmp / "res" / "lab__semi"
        for t in ("gtzan", "emo"):
            r = complete_result(t, "lab/semi", offset=-3.0)
            r["track"] = "semi-constrained"
            from marble.results import write_result

            write_result(semi / t / "semi-constrained.json", r)
        (semi / "model.json").write_text(json.dumps(model_info("lab/semi", track="semi-constrained")))
        for m in ("lab/full", "lab/two", "lab/semi"):
            sub = submit(tmp / "res", m, clone)
            git(clone, "merge", "-q", "--no-ff", "-m", f"merge {sub.branch}", sub.branch)
        pages = build_site(clone, tmp / "site")
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return tmp / "site", pages


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append((tag, v))


def test_site_is_self_contained(site):
    out, pages = site
    assert pages[0] == out / "index.html" and len(pages) == 1 + 10 + 3
    for p in pages:
        parser = _Refs()
        parser.feed(p.read_text())
        for tag, ref in parser.refs:  # only links between the site's own pages (or inline data)
            assert tag == "a" or ref.startswith("data:"), (p, tag, ref)
            if tag == "a" and ref.startswith("https://"):  # only the model's own link (model.json 'link')
                assert f'<a class="ext" href="{ref}"' in p.read_text() and p.parent.name == "models", (p, ref)
            elif tag == "a":
                assert not re.match(r"^[a-z]+://", ref), (p, ref)
                assert (p.parent / ref).resolve().is_file(), (p, ref)


def test_published_rows_show_the_published_averages(site):
    out, _ = site
    text = (out / "index.html").read_text()
    with (data_dir() / REFERENCE_CSV).open(newline="") as f:
        published = list(csv.DictReader(f))
    checked = 0
    for row in published:
        m = re.search(r'data-entry="' + re.escape(row["model"].replace(" ", "_")) +
                      r'@published">.*?<td class="num marble" data-value="([^"]*)"[^>]*>([^<]*)</td>', text)
        assert m, row["model"]
        if row["avg"]:
            assert m.group(2) == row["avg"] and abs(float(m.group(1)) - float(row["avg"])) <= 0.05, row["model"]
            checked += 1
        else:
            assert m.group(2) == "-"
    assert checked == 6


# ---------------------------------------------------------------- the browser

@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("MARBLE_REQUIRE_BROWSER") == "1":
            pytest.fail("MARBLE_REQUIRE_BROWSER=1 but chromium/chromedriver are not on PATH")
        pytest.skip("SKIPPED: no chromium/chromedriver on this machine, so the site is NOT tested in a browser; "
                    "install them: apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium missing: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1600,1000",
              "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _shot(driver, tmp_path, name):
    p = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(p)) and p.stat().st_size > 10_000
    extra = os.environ.get("MARBLE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, Path(extra) / p.name)
    return p


def _errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def _rows(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")


def _column(driver, header: str) -> int:
    from selenium.webdriver.common.by import By

    heads = [h.text.strip() for h in driver.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")]
    return heads.index(header)


def _values(driver, col: int) -> list:
    out = []
    for r in _rows(driver):
        v = r.find_elements("css selector", "td")[col].get_attribute("data-value")
        out.append(float(v) if v else None)
    return out


def test_index_sorts_and_filters_without_console_errors(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out, _ = site
    browser.get((out / "index.html").as_uri())
    assert browser.title == "MARBLE leaderboard"
    assert _errors(browser) == []
    rows = _rows(browser)
    # one track at a time, the constrained one first: the semi-constrained row is not ranked among them
    assert len(rows) == 13 and [r.get_attribute("data-track") for r in rows if not r.is_displayed()] == ["semi-constrained"]
    assert browser.find_element(By.ID, "row-count").text == "12 of 13 rows"
    _shot(browser, tmp_path, "index")
    Select(browser.find_element(By.ID, "track-filter")).select_by_value("all")
    assert all(r.is_displayed() for r in _rows(browser))

    entries = lambda: [r.get_attribute("data-entry") for r in _rows(browser)]  # noqa: E731
    col = _column(browser, "gtzan")
    before = entries()
    header = browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")[col]
    header.click()
    desc = _values(browser, col)
    assert entries() != before and "sorted-desc" in header.get_attribute("class")
    present = [v for v in desc if v is not None]
    assert present == sorted(present, reverse=True) and desc[:len(present)] == present  # missing last
    assert entries()[0] == "lab__two@v1"  # MERT-v1-95M gtzan 74.8 + 10 beats SOTA 83.5
    header.click()
    asc = [v for v in _values(browser, col) if v is not None]
    assert asc == sorted(asc) and asc[0] == 65.2  # CLMR
    _shot(browser, tmp_path, "index-sorted")

    marble_col = _column(browser, "MARBLE")
    browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")[marble_col].click()
    ms = [v for v in _values(browser, marble_col) if v is not None]
    assert ms == sorted(ms, reverse=True) and len(ms) == 7  # 6 published averages + lab/full

    Select(browser.find_element(By.ID, "track-filter")).select_by_value("semi-constrained")
    shown = [r for r in _rows(browser) if r.is_displayed()]
    hidden = [r for r in _rows(browser) if not r.is_displayed()]
    assert [r.get_attribute("data-entry") for r in shown] == ["lab__semi@v1"] and len(hidden) == 12
    assert browser.find_element(By.ID, "row-count").text == "1 of 13 rows"
    _shot(browser, tmp_path, "index-semi-constrained")
    Select(browser.find_element(By.ID, "track-filter")).select_by_value("constrained")
    assert len([r for r in _rows(browser) if r.is_displayed()]) == 12
    assert _errors(browser) == []


def test_model_page_shows_layer_plots_and_manifest(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    out, _ = site
    browser.get((out / "index.html").as_uri())
    browser.find_element(By.CSS_SELECTOR, 'tr[data-entry="lab__full@v1"] td.model a').click()
    assert browser.current_url.endswith("models/lab__full@v1.html")
    assert _errors(browser) == []
    plots = browser.find_elements(By.CSS_SELECTOR, "figure.layer-plot")
    assert len(plots) == 14
    for p in plots:  # each image decoded by the browser and shown at a useful size
        img = p.find_element(By.TAG_NAME, "img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        assert img.is_displayed() and img.size["height"] > 150
    gtzan = browser.find_element(By.CSS_SELECTOR, 'figure.layer-plot[data-task="gtzan"]')
    r = complete_result("gtzan", "lab/full")
    layers = json.loads(gtzan.get_attribute("data-layers"))
    lines = json.loads(gtzan.get_attribute("data-lines"))
    assert layers == [0, 1, 2, 3] and len(lines) == 6  # one line per LR of the card's grid
    want = {f"{s['lr']:g}": {} for s in r["sweep"]}
    for s_ in r["sweep"]:
        if s_["layer"] != "weighted":
            want[f"{s_['lr']:g}"][s_["layer"]] = s_["test"]["accuracy"] * 100
    assert {lr: dict(zip(layers, ys)) for lr, ys in lines.items()} == \
        {lr: {k: pytest.approx(v) for k, v in d.items()} for lr, d in want.items()}
    assert json.loads(gtzan.get_attribute("data-selected")) == [2, 0.001, pytest.approx(r["test"]["accuracy"] * 100)]
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "abababababababab" in text and "0.1.0" in text and "94,000,000" in text  # encoder hash, toolkit, params
    browser.execute_script("document.querySelector('figure.layer-plot').scrollIntoView()")
    _shot(browser, tmp_path, "model-page")

    browser.back()
    browser.find_element(By.CSS_SELECTOR, 'tr[data-entry="MERT-v1-95M@published"] td.model a').click()
    assert "No layer-wise data" in browser.find_element(By.TAG_NAME, "body").text
    assert browser.find_elements(By.CSS_SELECTOR, "figure.layer-plot") == [] and _errors(browser) == []


def test_sticky_model_column_readable_facts_and_no_page_scroll(site, browser, tmp_path):
    """Issue 23 item 11: the model column stays in view when the table scrolls sideways; a model page gives one
    metric a row (MUSDB's many metrics grow the table down, and no table scrolls the page sideways), its facts
    under readable names (no raw keys, no True/False) and its link clickable."""
    from selenium.webdriver.common.by import By

    out, _ = site
    browser.set_window_size(900, 1000)  # narrower than the table
    try:
        browser.get((out / "index.html").as_uri())
        wrap = browser.find_element(By.CSS_SELECTOR, "div.wrap")
        assert browser.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", wrap)
        model = browser.find_element(By.CSS_SELECTOR, 'tr[data-entry="lab__full@v1"] td.model')
        gtzan = browser.find_element(By.CSS_SELECTOR, 'tr[data-entry="lab__full@v1"] td[data-task="gtzan"]')
        x0, g0 = model.rect["x"], gtzan.rect["x"]
        browser.execute_script("arguments[0].scrollLeft = 400", wrap)
        assert gtzan.rect["x"] < g0 - 300  # the table scrolled ...
        assert model.rect["x"] == pytest.approx(x0, abs=1)  # ... and the model column stayed
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        _shot(browser, tmp_path, "index-scrolled")

        browser.get((out / "models" / "lab__full@v1.html").as_uri())
        assert _errors(browser) == []
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        r = complete_result("musdb", "lab/full")
        rows = browser.find_elements(By.CSS_SELECTOR, 'table.results tr[data-task="musdb"]')
        names = [row.find_element(By.CSS_SELECTOR, "td.metric").text for row in rows]
        assert names == [k for k, v in r["test"].items() if v is not None] and len(names) > 1
        facts = dict(zip([e.text for e in browser.find_elements(By.CSS_SELECTOR, "dl.facts dt")],
                         [e.text for e in browser.find_elements(By.CSS_SELECTOR, "dl.facts dd")]))
        info = model_info("lab/full")
        assert facts["Display name"] == info["display_name"] and facts["Weights public"] == "yes"
        assert facts["Parameters"] == "94,000,000" and facts["Sample rate"] == "24,000 Hz"
        assert not {"display_name", "weights_public", "sample_rate"} & set(facts) and "True" not in facts.values()
        link = browser.find_element(By.CSS_SELECTOR, "dl.facts a.ext")
        assert link.get_attribute("href") == info["link"] and link.is_displayed() and link.text == info["link"]
        _shot(browser, tmp_path, "model-page-narrow")
    finally:
        browser.set_window_size(1600, 1000)


def test_tie_markers_and_probe_links(site, browser, tmp_path):
    """EMO: lab/full (best) and lab/two are not separable: both carry the top-group marker, whose tooltip gives
    the interval; published cells say why they have no group; each cell with a shipped probe links it."""
    from selenium.webdriver.common.by import By

    out, _ = site
    browser.get((out / "index.html").as_uri())
    assert _errors(browser) == []

    def cell(entry, task):
        return browser.find_element(By.CSS_SELECTOR, f'tr[data-entry="{entry}"] td[data-task="{task}"]')

    best, other = cell("lab__full@v1", "emo"), cell("lab__two@v1", "emo")
    for c in (best, other):
        mark = c.find_element(By.CSS_SELECTOR, "span.tie")
        assert mark.text == "†" and mark.is_displayed()
    assert best.get_attribute("title").startswith("top group: best score")
    tip = other.find_element(By.CSS_SELECTOR, "span.tie").get_attribute("title")
    m = re.search(r"not separable from the best \(full\): full - this = ([+-][\d.]+), 95% CI \[([+-][\d.]+), "
                  r"([+-][\d.]+)\]", tip)
    assert m and float(m.group(2)) < 0 < float(m.group(3)), tip
    assert cell("lab__two@v1", "gtzan").find_elements(By.CSS_SELECTOR, "span.tie") == []  # no outputs: no group
    assert "no per-item test outputs" in cell("lab__two@v1", "gtzan").get_attribute("title")
    published = cell("MERT-v1-95M@published", "emo")
    assert published.get_attribute("title") == "no tie group: published numbers carry no per-item test outputs"
    assert published.find_elements(By.CSS_SELECTOR, "span.tie") == []

    links = browser.find_elements(By.CSS_SELECTOR, "#leaderboard a.probe")
    where = sorted((a.find_element(By.XPATH, "../..").get_attribute("data-entry"),
                    a.find_element(By.XPATH, "..").get_attribute("data-task")) for a in links)
    assert where == [("lab__full@v1", "emo"), ("lab__full@v1", "gtzan-beat"), ("lab__two@v1", "emo")]
    for a in links:
        href = a.get_attribute("href")
        assert href.startswith("file://") and a.is_displayed()
        entry = a.find_element(By.XPATH, "../..").get_attribute("data-entry")
        task = a.find_element(By.XPATH, "..").get_attribute("data-task")
        shipped = out / "probes" / entry / task / "constrained.probe.safetensors"
        assert unquote(href) == unquote(shipped.as_uri()) and shipped.is_file()
        from marble.probe.shipped import ShippedProbe

        meta = ShippedProbe.load(shipped).meta
        assert meta["task"] == task and (task != "gtzan-beat" or meta["decoder"]["kind"] == "dbn")
    _shot(browser, tmp_path, "index-ties")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-entry="lab__two@v1"] td.model a').click()
    page_links = browser.find_elements(By.CSS_SELECTOR, "a.probe")
    assert [unquote(a.get_attribute("href")) for a in page_links] == [
        unquote((out / "probes" / "lab__two@v1" / "emo" / "constrained.probe.safetensors").as_uri())]
    assert _errors(browser) == []


def test_build_refuses_a_malformed_repository(tmp_path):
    from marble.leaderboard.repo import RepoError, init_repo
    from marble.results import ResultError

    clone, _ = make_leaderboard(tmp_path)
    with pytest.raises(RepoError, match="already a leaderboard repository"):
        init_repo(clone)
    bad = clone / "models" / "MERT-v1-95M@published" / "gtzan" / "constrained.json"
    r = json.loads(bad.read_text())
    r["test"]["accuracy"] = "high"
    bad.write_text(json.dumps(r))
    with pytest.raises(ResultError, match=re.escape(f"{bad}: field 'test.accuracy'")):
        build_site(clone, tmp_path / "site")
    bad.unlink()
    (clone / "models" / "MERT-v1-95M@published" / "model.json").write_text("{}")
    with pytest.raises(RepoError, match="model.json: field 'name': missing"):
        build_site(clone, tmp_path / "site")
    (clone / "leaderboard.json").unlink()
    with pytest.raises(RepoError, match="not a leaderboard repository"):
        build_site(clone, tmp_path / "site")
    assert not (tmp_path / "site").exists()  # nothing half-built


def test_init_and_build_commands(tmp_path):
    from typer.testing import CliRunner

    from marble.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["leaderboard", "init", str(tmp_path / "lb")])
    assert res.exit_code == 0 and "wrote 144 files" in res.output, res.output
    res = runner.invoke(app, ["leaderboard", "build", str(tmp_path / "lb"), "--out", str(tmp_path / "site")])
    assert res.exit_code == 0 and "10 model page(s)" in res.output, res.output
    assert (tmp_path / "site" / "index.html").read_text().count("<tr class=\"reported\"") == 10


def test_ci_half_width_of_an_interval_clipped_at_the_metric_range():
    """seed_summary clips ci95 to [0, 1]: the ± shown is still the t interval's half-width."""
    from marble.leaderboard.site import _ci_half
    from marble.metrics.aggregate import aggregate_metrics
    from marble.probe.report import seed_summary
    from marble.registry import get_card

    card = get_card("gtzan")
    s = seed_summary([1, 2, 3], [0.97, 0.99, 1.0], "accuracy")
    assert s["ci95"][1] == 1.0  # clipped
    from scipy import stats

    want = stats.t.ppf(0.975, 2) * s["std"] / 3 ** 0.5 * 100 / len(aggregate_metrics(card))
    r = {"source": "ours", "seeds": s}
    assert abs(_ci_half(r, card) - want) < 1e-9
