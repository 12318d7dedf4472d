"""report.html: one self-contained page per run, checked as a browser would see it (no TensorFlow)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import TINY, run_cli

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """Collects what the tests check: tags, attributes, text, and whether tags nest properly."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()
        self._in_h2 = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.headings.append(data)


def png(path: Path, color: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 1))
    fig.patch.set_facecolor(color)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture
def run(tmp_path) -> Path:
    """A completed run directory as training leaves it, plus an explain/gradcam grid."""
    from nnrun.config import load_config
    from nnrun.engine.plots import learning_curves
    from nnrun.rundir import RunDir

    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    cfg = load_config(config)
    run = RunDir.create(cfg)
    run.start(cfg, ["nnrun", "train", str(config)])
    for epoch, (acc, loss) in enumerate([(0.41, 1.2), (0.6875, 0.9), (0.8125, 0.61)], start=1):
        run.append_metrics({"epoch": epoch, "step": 16 * epoch, "split": "train", "loss": loss + 0.1,
                            "accuracy": acc - 0.05, "val_loss": loss, "val_accuracy": acc, "learning_rate": 0.01})
    run.append_metrics({"split": "val", "checkpoint": "best", "examples": 128, "loss": 0.61, "accuracy": 0.8125})
    learning_curves(run.read_metrics(), run.plots / "learning_curves.png", title="tiny")
    run.finish("completed", reason=None, final_metrics={"val_accuracy": 0.8125, "val_loss": 0.61}, epochs_completed=3)
    png(run.path / "explain" / "gradcam" / "grid.png", "red")
    (run.path / "explain" / "gradcam" / "manifest.json").write_text(json.dumps({"method": "gradcam", "num_images": 16}))
    return run.path


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def test_report_is_self_contained_and_complete(run):
    res = run_cli("report", str(run))
    assert res.returncode == 0, res.stderr
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path == run / "report.html"
    page = parse(path)
    assert page.errors == [] and page.stack == []  # every tag closed, properly nested
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe", "object")]
    # nothing is fetched: every image is an inline PNG
    images = [a["src"] for t, a in page.tags if t == "img"]
    assert len(images) == 2
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert base64.b64decode(images[0].split(",", 1)[1]) == (run / "plots" / "learning_curves.png").read_bytes()
    assert base64.b64decode(images[1].split(",", 1)[1]) == (run / "explain" / "gradcam" / "grid.png").read_bytes()
    assert not [a for t, a in page.tags for k, v in a.items() if k in ("href", "src") and not v.startswith("data:")]
    assert page.headings == ["Run", "Final metrics", "Learning curves", "Per epoch", "Evaluations",
                             "Explanations", "Config"]
    text = "".join(page.text)
    assert (run / "config.yaml").read_text() in text  # the resolved config, verbatim
    assert "0.8125" in text and "0.6100" in text and "gradcam — method: gradcam, num_images: 16" in text
    cells = [t for t, _ in page.tags].count("td")
    assert cells >= 3 * 6  # three epoch rows of at least six columns


def test_report_without_explanations_and_with_hostile_text(run):
    from nnrun.rundir import RunDir
    from nnrun.results.report import write_report

    shutil.rmtree(run / "explain")
    RunDir(run).update(status="failed", reason="<script>alert(1)</script> & more")
    page = parse(write_report(run))
    assert "Explanations" not in page.headings
    assert not [t for t, _ in page.tags if t == "script"]
    assert "<script>alert(1)</script> & more" in "".join(page.text)  # shown as text, not markup


def test_report_of_a_non_run_directory_is_a_usage_error(tmp_path):
    res = run_cli("report", str(tmp_path))
    assert res.returncode == 2 and res.stderr.startswith("error: not a run directory")


def test_report_renders_in_a_headless_browser_when_one_is_installed(run, tmp_path):
    """Chromium (Debian's package) when present: the page loads offline and its DOM holds the
    sections and both images. Without a browser the structural checks above stand in."""
    from nnrun.results.report import write_report

    path = write_report(run)
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        page = parse(path)
        assert page.errors == [] and len([t for t, _ in page.tags if t == "img"]) == 2
        return
    res = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          f"--user-data-dir={tmp_path / 'profile'}", path.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("<img") == 2 and "Learning curves" in res.stdout and "Explanations" in res.stdout
