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


def test_summary_first_and_contents_link_every_section(run):
    page = (run / "report.html").read_text()
    headings = re.findall(r'<h2 id="([^"]+)">', page)
    assert headings[0] == "summary"  # the one-screen summary comes before everything else
    nav = re.search(r'<nav class="toc">(.*?)</nav>', page, re.S).group(1)
    assert re.findall(r'href="#([^"]+)"', nav) == headings[1:]
    markdown = (run / "report.md").read_text()
    assert "## Summary" in markdown.split("## What ran")[0]
    assert "@media print" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_prints_to_pdf_in_headless_chromium(run, tmp_path):
    pdf = tmp_path / "report.pdf"
    _chromium(tmp_path, run, f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", data))
    assert pages >= 2, "the report should span pages, not be cut to one"
    assert len(data) > 50_000, "the figures should be in the PDF"
