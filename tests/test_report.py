import base64
import json
import re
import shutil
import subprocess
from decimal import Decimal

import pytest

from mathtune.analysis.analyze import run_analysis
from mathtune.core.errors import MathtuneError
from mathtune.report.build import build_report
from synthetic_run import write_run

# A number as the report writes it: 0.5, -3, or a count with thousands separators (1,543,714,304).
NUMBER_RE = re.compile(r"(?<![\w.,])-?\d{1,3}(?:,\d{3})+(?![\w,])|(?<![\w.])-?\d+(?:\.\d+)?")


def number(token: str) -> Decimal:
    return Decimal(token.replace(",", ""))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert('pwned')</script>"


def built_run(root, gsm8k_dir, **kwargs):
    run = write_run(root, gsm8k_dir, **kwargs)
    # Every wrong tuned completion carries a script tag, so examples certainly show one.
    path = run / "eval" / "tuned.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        if not r["correct_strict"]:
            r["completion"] = SCRIPT + " " + r["completion"]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    run_analysis(run)
    build_report(run)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory, gsm8k_dir):
    return built_run(tmp_path_factory.mktemp("report"), gsm8k_dir, shape="overfitting")


def numbers_in_json(value) -> set[Decimal]:
    found = set()
    if isinstance(value, dict):
        for v in value.values():
            found |= numbers_in_json(v)
    elif isinstance(value, list):
        for v in value:
            found |= numbers_in_json(v)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, (int, float)):
        found.add(Decimal(str(value)))
    elif isinstance(value, str):
        found |= {number(t) for t in NUMBER_RE.findall(value)}
    return found


def test_files_written(run):
    assert (run / "report.md").is_file() and (run / "report.html").is_file()
    assert sorted(p.name for p in (run / "figures").iterdir()) == sorted(
        ["loss.png", "token_accuracy.png", "accuracy.png", "error_categories.png", "accuracy_by_steps.png",
         "contamination.png"])
    assert not list(run.glob(".report.*"))


def test_every_number_in_the_report_is_in_analysis_json(run):
    stored = numbers_in_json(json.loads((run / "analysis.json").read_text()))
    shown = {number(t) for t in NUMBER_RE.findall((run / "report.md").read_text())}
    assert shown, "the report shows no numbers at all"
    assert shown - stored == set()


def test_report_holds_the_required_parts(run):
    md = (run / "report.md").read_text()
    for text in ("Trend verdict: **overfitting**", "teacher-forced next-token accuracy, NOT problem-solving accuracy",
                 "exact McNemar p", "paired bootstrap", "Contamination check", "improved", "regressed",
                 "Accuracy by number of reasoning steps", "estimated cost", "Protocol: GSM8K test"):
        assert text in md
    for name in ("loss", "token_accuracy", "accuracy", "error_categories", "accuracy_by_steps"):
        assert f"(figures/{name}.png)" in md


def test_parameter_counts_say_what_the_total_holds(run):
    """The plan and the report count parameters alike (the total includes the adapter), say so,
    and write counts with thousands separators."""
    md = (run / "report.md").read_text()
    assert ("| trainable / total parameters (total = base model + adapter) | 4,358,144 / 1,548,072,448 "
            "(base model 1,543,714,304 + adapter 4,358,144) |") in md


def test_model_text_is_escaped_in_html(run):
    page = (run / "report.html").read_text()
    assert SCRIPT not in page
    assert html_escaped(SCRIPT) in page
    assert "<script" not in page.lower()
    # In Markdown the text sits inside a code fence, where renderers do not interpret it.
    md = (run / "report.md").read_text()
    fenced = re.findall(r"```text\n(.*?)\n```", md, flags=re.S)
    assert any(SCRIPT in block for block in fenced)


def html_escaped(text):
    import html

    return html.escape(text)


def embedded_pngs(page: str) -> list[bytes]:
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    return [base64.b64decode(s.split(",", 1)[1], validate=True) for s in sources]


def test_html_is_self_contained_with_valid_pngs(run):
    import matplotlib.image

    page = (run / "report.html").read_text()
    images = embedded_pngs(page)
    assert len(images) == 6
    for data in images:
        assert data.startswith(PNG_SIGNATURE)
        import io

        pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert "src=\"figures/" not in page and "http" not in page


def test_eval_only_folder_leaves_training_out(tmp_path, gsm8k_dir):
    run = built_run(tmp_path, gsm8k_dir, with_train=False)
    md = (run / "report.md").read_text()
    assert "## Training" not in md and "No training in this run" not in md
    assert not (run / "figures" / "loss.png").exists()
    assert (run / "figures" / "accuracy.png").exists()


def test_report_formats_are_respected(tmp_path, gsm8k_dir):
    run = write_run(tmp_path, gsm8k_dir)
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("- html\n", ""))
    run_analysis(run)
    written = build_report(run)
    assert (run / "report.md") in written
    assert not (run / "report.html").exists()


def test_report_without_analysis_is_a_user_error(tmp_path):
    with pytest.raises(MathtuneError, match="no analysis.json"):
        build_report(tmp_path)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path, run, *args: str) -> None:
    """Headless Chromium on the run's report.html, offline and with a throwaway profile."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args, (run / "report.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_renders_in_headless_chromium_with_its_images(run, tmp_path):
    import matplotlib.image
    import numpy as np

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, run, f"--screenshot={shot}", "--window-size=1200,3000")
    assert shot.is_file() and shot.stat().st_size > 50_000
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    not_white = (pixels < 0.95).any(axis=-1).mean()
    assert not_white > 0.05, "the page looks blank"
    # Text and table borders are grey; only the embedded figures bring saturated colour
    # (the blue train curve, the red validation curve, the bars).
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    assert (saturation > 0.3).sum() > 2_000, "no figure rendered"
    assert np.isfinite(pixels).all()


def test_the_answer_comes_first_and_contents_link_every_section(run):
    """The verdict is the first thing after the title, the summary table and the accuracy figure
    follow it, and the contents link every section."""
    page = (run / "report.html").read_text()
    body = page.split("<body>", 1)[1]
    assert re.match(r'\s*<h1[^>]*>[^<]*</h1>\s*<p class="verdict">', body)
    first = body.split('<nav class="toc">')[0]
    assert '<div class="columns">' in first and "<table>" in first and first.count("<img ") == 1
    headings = re.findall(r'<h2 id="([^"]+)">', page)
    nav = re.search(r'<nav class="toc">(.*?)</nav>', page, re.S).group(1)
    assert re.findall(r'href="#([^"]+)"', nav) == headings
    markdown = (run / "report.md").read_text()
    assert markdown.split("\n\n")[1].startswith("**Strict accuracy changed by")  # the same order in Markdown
    assert "@media print" in page


def _sentences(markdown: str) -> list[str]:
    prose = re.sub(r"```text\n.*?\n```", "", markdown, flags=re.S)  # model text may repeat itself
    lines = [line.strip("-* ") for line in prose.splitlines() if line.strip() and not line.startswith("|")]
    return [s for line in lines for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", line) if len(s) > 30]


def test_no_sentence_is_said_twice_and_no_markdown_leaks_into_the_html(run):
    sentences = _sentences((run / "report.md").read_text())
    assert [s for s in set(sentences) if sentences.count(s) > 1] == []
    assert sum("Strict accuracy changed by" in s for s in sentences) == 1  # the verdict, once
    page = (run / "report.html").read_text()
    text = re.sub(r"<pre>.*?</pre>", "", page, flags=re.S)  # model text is shown as written
    text = re.sub(r"<[^>]+>", "", text.split("<body>", 1)[1])
    assert "`" not in text and "**" not in text and "](#" not in text


def test_provenance_plan_basis_and_examples_are_collapsed(tmp_path, gsm8k_dir):
    """Long full paths, versions and examples sit in <details>; the tables show short names."""
    run = built_run(tmp_path, gsm8k_dir, shape="overfitting")
    page = (run / "report.html").read_text()
    collapsed = "".join(re.findall(r"<details>.*?</details>", page, flags=re.S))
    assert "Each stage&#x27;s model, data, device, paths and versions" in collapsed
    assert collapsed.count('<p class="label">completion:</p>') == page.count('<p class="label">completion:</p>') > 0
    assert "<details" not in page.split('<p class="verdict">')[0]


FOLD_PX = (1280, 720)  # a laptop's browser window at 1280 px wide


def _layout(tmp_path, run, width: int, height: int) -> dict:
    """Where the verdict, the summary table and the first figure sit when the report fills a
    window of this size in headless Chromium: the page in an iframe of exactly that size (a
    headless window has a minimum width), read by a script of the outer page, whose DOM
    Chromium dumps."""
    outer = tmp_path / f"layout-{width}.html"
    outer.write_text(
        f'<!DOCTYPE html><html><body style="margin:0"><iframe id="f" src="{(run / "report.html").resolve().as_uri()}" '
        f'style="width:{width}px;height:{height}px;border:0"></iframe><script>'
        "window.addEventListener('load', () => { const w = document.getElementById('f').contentWindow, d = w.document;"
        " const box = s => { const e = d.querySelector(s); if (!e) return null; const r = e.getBoundingClientRect();"
        " return [r.top, r.bottom, r.left, r.right]; };"
        " const out = document.createElement('pre'); out.id = 'layout'; out.textContent = JSON.stringify("
        "{verdict: box('p.verdict'), figure: box('div.columns img'), table: box('div.columns table'),"
        " width: d.documentElement.scrollWidth, viewport: [w.innerWidth, w.innerHeight]});"
        " document.body.appendChild(out); });</script></body></html>")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--allow-file-access-from-files",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width + 100},{height + 100}",
           "--virtual-time-budget=5000", "--dump-dom", outer.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    found = re.search(r'<pre id="layout">(.*?)</pre>', dom)
    assert found, "chromium dumped no layout"
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["viewport"] == [width, height]
    return layout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_verdict_and_the_figure_are_above_the_fold_at_1280_px(run, tmp_path):
    width, height = FOLD_PX
    layout = _layout(tmp_path, run, width, height)
    assert 0 <= layout["verdict"][0] and layout["verdict"][1] <= height, layout
    assert layout["figure"] and layout["figure"][1] <= height, layout
    assert layout["figure"][2] >= layout["table"][3], "the figure sits beside the table"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_at_a_phone_width_the_verdict_leads_and_nothing_overflows(run, tmp_path):
    layout = _layout(tmp_path, run, 390, 844)
    assert layout["verdict"][1] <= 844 and layout["figure"][0] >= layout["table"][1], layout
    assert layout["width"] <= 390 + 1, "the page is wider than the phone's screen"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_prints_to_pdf_in_headless_chromium(run, tmp_path):
    pdf = tmp_path / "report.pdf"
    _chromium(tmp_path, run, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 2, "the report should span pages, not be cut to one"
    assert len(data) > 50_000, "the figures should be in the PDF"
