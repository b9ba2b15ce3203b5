"""Tests of neuroprune.report.html: the self-contained report page.

The browser tests render the page with headless Chromium when ``/usr/bin/chromium``
exists (Debian: ``apt-get install -y chromium chromium-driver``) and are skipped otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_report_plots import make_report

from neuroprune.report.html import render_html, write_html
from neuroprune.report.plots import make_figures
from neuroprune.report.table import format_report

CHROMIUM = Path("/usr/bin/chromium")
IMG_PREFIX = '<img src="data:image/png;base64,'
HOSTILE = "<script>alert(1)</script>"
# Colours only the figures use (not the page's CSS): the "before" bars of the widths figure
# and the "neurons removed" bars of the steps figure.
FIGURE_COLORS = {"widths": (0xAA, 0xB4, 0xC3), "steps": (0xD9, 0xDE, 0xE7)}


def hostile_report() -> dict:
    """The full report with markup in a layer name, a reason, a config value and the metric."""
    report = make_report()
    report["layers"].append({"name": f"enc{HOSTILE}", "width_before": 8, "width_after": 4})
    report["fixed_layers"][f"out{HOSTILE}"] = [f"why {HOSTILE}"]
    report["config"]["note"] = f"x {HOSTILE} & y"
    report["metric"] = f"acc{HOSTILE}"
    return report


def test_page_shows_numbers_layers_and_title():
    page = render_html(make_report())
    assert "<title>neuroprune report</title>" in page and "<h1>neuroprune report</h1>" in page
    for expected in ["17,226", "2,778", "6.20x smaller", "6.26x fewer", "67.7 KiB", "11.3 KiB",
                     "97.22 %", "96.67 %", "-0.5 pt", "1.4x faster", "0.024 ms",
                     "95.30 %", "94.90 %", "87.10 %", "fc1", "fc2", "head", "128", "50.0 %",
                     "fc3", "model output", "magnitude", "tolerance 0.02", "nothing to remove"]:
        assert expected in page, expected


def test_summary_cells_match_the_text_table():
    report = make_report()
    text_lines = format_report(report).split("Summary\n", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    text_rows = [re.split(r"\s{2,}", line.strip()) for line in text_lines]
    summary = render_html(report).split("<h2>Summary</h2>", 1)[1].split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    html_rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", summary)]
    assert html_rows == text_rows and len(html_rows) == 6


def test_rolled_back_rows_are_marked():
    page = render_html(make_report())
    rows = re.findall(r"<tr class=\"([a-z-]+)\">(.*?)</tr>", page)
    marked = [(css, "rolled back" in cells, "drop +0.0820" in cells) for css, cells in rows if "drop" in cells]
    assert marked == [("accepted", False, False), ("rolled-back", True, True), ("accepted", False, False)]


def test_one_inline_image_per_figure_with_alt_text():
    report = make_report()
    page = render_html(report)
    assert page.count(IMG_PREFIX) == len(make_figures(report)) == 4
    assert page.count("<img ") == 4
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="[^"]+">', page)) == 4
    assert render_html(make_report(optional=False)).count(IMG_PREFIX) == 2


def test_page_makes_no_external_references():
    page = render_html(make_report())
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "@import" not in page


def test_report_strings_are_escaped():
    page = render_html(hostile_report())
    assert HOSTILE not in page and "<script" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for expected in [f"enc{escaped}", f"out{escaped}", f"why {escaped}", f"x {escaped} &amp; y",
                     f"acc{escaped}"]:
        assert expected in page, expected


def test_missing_side_is_an_error():
    report = make_report()
    del report["after"]
    with pytest.raises(ValueError, match="after"):
        render_html(report)


def test_write_html_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "report.html"
    write_html(make_report(optional=False), target)
    assert target.read_text(encoding="utf-8") == render_html(make_report(optional=False))

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html(make_report(), target)
    assert target.read_text(encoding="utf-8").count(IMG_PREFIX) == 2
    assert os.listdir(tmp_path) == ["report.html"]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    """The hostile report's page, written to a file, and a runner of headless Chromium."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs {CHROMIUM}: apt-get install -y chromium chromium-driver (Debian packages)")
    folder = tmp_path_factory.mktemp("browser")
    page = folder / "report.html"
    write_html(hostile_report(), page)

    def run(name: str, *args: str) -> subprocess.CompletedProcess:
        command = [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={folder / ('profile-' + name)}",
            "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND",
            *args, page.as_uri(),
        ]
        env = {**os.environ, "HOME": str(folder / "home")}
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    return page, run


def console_problems(stderr: str, page: Path) -> list[str]:
    """Lines where the page logged to the console (errors, CSP refusals) or threw."""
    return [line for line in stderr.splitlines()
            if "Uncaught" in line or ("CONSOLE" in line and page.as_uri() in line)]


def test_browser_dom_has_the_images_and_no_script(browser_page):
    page, run = browser_page
    done = run("dom", "--dump-dom")
    dom = done.stdout
    assert "<h1>neuroprune report</h1>" in dom
    assert dom.count(IMG_PREFIX) == 4
    assert "<script" not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert 'class="rolled-back"' in dom
    assert console_problems(done.stderr, page) == []


def test_browser_screenshot_shows_the_page_and_figures(browser_page):
    from PIL import Image

    page, run = browser_page
    shot = page.parent / "shot.png"
    done = run("shot", f"--screenshot={shot}", "--window-size=1200,2000")
    assert console_problems(done.stderr, page) == []
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        pixels = np.asarray(image.convert("RGB"), dtype=int)
    not_white = np.any(pixels < 235, axis=-1).mean()
    assert not_white > 0.03, f"only {not_white:.1%} of the screenshot is not white"
    for figure, color in FIGURE_COLORS.items():
        count = (np.abs(pixels - np.array(color)).max(axis=-1) <= 2).sum()
        assert count > 2000, f"only {count} pixels of the {figure} figure's bar colour: is it drawn?"
