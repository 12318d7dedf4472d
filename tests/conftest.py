"""Shared fixtures: tiny configs that train in seconds, and a real-process CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
seed: 1
data:
  dataset: shapes
  params: {num_train: 1024, num_val: 128, image_size: 16, min_scale: 0.5, max_scale: 0.9}
  batch_size: 64
model:
  name: resnet
  params: {stages: [8, 16], blocks_per_stage: 1}
optimizer: {name: adam, learning_rate: 0.01}
train: {epochs: 3}
runtime: {runs_root: RUNS, deterministic: true}
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A config that trains a tiny ResNet on 16 px shapes in a few seconds."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("RUNS", str(tmp_path / "runs")))
    return path


@pytest.fixture
def write_yaml(tmp_path: Path):
    def write(text: str, name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `python -m nnrun ARGS` as a user would; returns CompletedProcess (text)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "nnrun", *args], cwd=cwd or ROOT, capture_output=True, text=True,
        timeout=timeout, env=full_env,
    )


@pytest.fixture
def cli():
    return run_cli


def train_tiny(tmp: Path, *sets: str) -> Path:
    """Train the TINY config (plus `--set` overrides) under tmp through the CLI; the run directory."""
    config = tmp / "tiny.yaml"
    config.write_text(TINY.replace("RUNS", str(tmp / "runs")))
    res = run_cli("train", str(config), *(a for s in sets for a in ("--set", s)), cwd=tmp)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])
