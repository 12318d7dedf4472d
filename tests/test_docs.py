"""The documentation: the site builds strictly, the README stays a short front page whose links
resolve, and the generated reference pages hold what the code defines. No TensorFlow."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner, not a build message

PAGES = [  # every guide and reference page the site must build
    "guides/your-own-data", "guides/models-and-losses", "guides/fine-tuning", "guides/techniques",
    "guides/interpretation", "guides/sweeps-and-search", "guides/comparing-runs", "guides/tracking-and-dashboards",
    "guides/predict-and-export", "guides/scaling-out", "guides/troubleshooting",
    "guides/reproducibility",
    "reference/cli", "reference/config", "reference/run-directory", "reference/components",
    "performance", "architecture",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` of this checkout into a temporary site directory."""
    out = tmp_path_factory.mktemp("site")
    res = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV,
    )
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    return out


def test_site_builds_strict_with_every_page(site):
    assert (site / "index.html").is_file()
    missing = [page for page in PAGES if not (site / page / "index.html").is_file()]
    assert not missing, f"pages not built: {missing}"


def test_readme_is_a_short_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move detail into docs/"


# -- README links ------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_LINK = re.compile(r"\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def slugify(title: str) -> str:
    """Python-Markdown's toc slug, which mkdocs uses: the heading's text (markup removed),
    ASCII, punctuation dropped, lowercase, runs of spaces and hyphens to one '-'."""
    title = re.sub(r"<[^>]+>", "", title)                       # inline HTML
    title = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)     # links: their text
    title = html.unescape(title)
    title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    title = re.sub(r"[^\w\s-]", "", title).strip().lower()      # backticks, *, :, ', ... dropped
    return re.sub(r"[-\s]+", "-", title)


def anchors_of(markdown: str) -> set[str]:
    """Heading ids of a Markdown page: explicit `{ #id }` ones, else the toc slug (deduplicated
    with _1, _2 as toc does), plus raw HTML ids."""
    found, seen = set(), {}
    for line in _FENCE.sub("", markdown).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            title = heading.group(1)
            explicit = re.search(r"\{\s*#([^\s}]+)[^}]*\}\s*$", title)
            if explicit:
                found.add(explicit.group(1))
                continue
            slug = slugify(title)
            if slug in seen:
                seen[slug] += 1
                slug = f"{slug}_{seen[slug]}"
            else:
                seen[slug] = 0
            found.add(slug)
    found |= set(re.findall(r'\bid="([^"]+)"', markdown))
    return found


def readme_links() -> list[str]:
    text = _FENCE.sub("", (ROOT / "README.md").read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # links are not read inside code
    return [t for t in _LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def test_slugify_matches_mkdocs_toc():
    assert slugify("Data larger than memory: `cache` and `shuffle_buffer`") == \
        "data-larger-than-memory-cache-and-shuffle_buffer"
    assert slugify("A changed `train.epochs` keeps the learning-rate schedule's horizon") == \
        "a-changed-trainepochs-keeps-the-learning-rate-schedules-horizon"
    assert slugify("Killed (SIGKILL, OOM killer, preemption)") == "killed-sigkill-oom-killer-preemption"


def test_readme_links_resolve():
    links = readme_links()
    assert len(links) >= 15, links  # the front page links into the docs
    broken = []
    for link in links:
        target, _, anchor = link.partition("#")
        path = (ROOT / target).resolve() if target else ROOT / "README.md"
        if not path.exists():
            broken.append(f"{link}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors_of(path.read_text(encoding="utf-8")):
            broken.append(f"{link}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, "broken README links:\n" + "\n".join(broken)


# -- generated reference -----------------------------------------------------------------------

def _nnrun(*args: str) -> str:
    """`python -m nnrun ARGS` from the checkout (none of the commands used here imports TensorFlow)."""
    res = subprocess.run([sys.executable, "-m", "nnrun", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env=ENV)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _cli_json(*args: str):
    return json.loads(_nnrun(*args))


def test_config_reference_holds_every_schema_field(site):
    schema = _cli_json("schema")
    page = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    missing = [key for key in schema["properties"] if key not in ids]
    assert not missing, f"top-level config keys without an entry in the config reference: {missing}"
    for name, sub in schema["$defs"].items():  # and every key of every section
        for key in sub.get("properties", {}):
            assert f"{key}</code>" in page, f"{name}.{key} missing from the config reference"


def test_component_reference_names_every_component(site):
    spec = importlib.util.spec_from_file_location("docs_hook", ROOT / "docs" / "hooks" / "reference.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = (site / "reference" / "components" / "index.html").read_text(encoding="utf-8")
    headings = set(re.findall(r'<h3 id="([^"]+)"', page))
    expected = {hook.component_anchor(c["kind"], c["name"]) for c in _cli_json("components", "--json")}
    assert expected, "the registry lists no components"
    assert expected == headings, (f"missing: {sorted(expected - headings)}, "
                                  f"not registered: {sorted(headings - expected)}")


def test_cli_reference_lists_every_command(site):
    commands = re.findall(r"^  (\w[\w-]*)\s{2,}", _nnrun("--help").split("Commands:")[1], re.M)
    page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    missing = [c for c in commands if f'id="nnrun-{c}"' not in page]
    assert commands and not missing, f"commands missing from the CLI reference: {missing or commands}"
