"""README.md's Python code runs as written, and the docs point only at files the repository has.

Every ```python block of README.md runs as its own script (``python block.py``, so that
``if __name__ == "__main__":`` and worker processes behave as in a user's file) in a folder that
holds what the README's examples name: ``imagenet/train`` and ``imagenet/val`` ImageFolders (tiny
synthetic scenes in ImageNet wnid folders), a ``cache`` with both splits, and
``weights/resnet18.pth`` (a random-init checkpoint written here). Only the GPU is stubbed: without
one, ``device="cuda"`` becomes ``device="cpu"``. Not run: the blocks of the two training-script
sections (edits to timm's and torchvision's scripts, which need those scripts around them) and any
block whose first line starts with ``# fragment of`` (a visible marker for a piece of someone
else's script).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scenes import CLASSES, make_imagefolder

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
FRAGMENT = "# fragment of "
NOT_RUN_SECTIONS = ("#### timm's `train.py`", "#### torchvision's `references/classification/train.py`")
# ImageNet-1k wnids, so that an ImageNet classifier's outputs map onto the cache's classes.
WNIDS = ("n01440764", "n02085620", "n02102040")


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of each ```python block that is meant to run (see the module docstring)."""
    blocks: list[tuple[int, str]] = []
    skipped, fence, start, lines = False, None, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if fence is None:
            if line.startswith("```"):
                fence, start, lines = line[3:].strip(), n, []
            elif line.startswith("#") and len(line) - len(line.lstrip("#")) <= 4:
                # a heading of level <= 4 starts a section; level 5+ headings stay inside it
                skipped = line.strip().startswith(NOT_RUN_SECTIONS)
        elif line.startswith("```"):
            code = "\n".join(lines) + "\n"
            runs = not skipped and not code.startswith(FRAGMENT)
            if fence == "python" and runs:
                blocks.append((start, code))
            fence = None
        else:
            lines.append(line)
    return blocks


def test_block_extraction_skips_the_training_script_sections_and_fragments():
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 3
    assert not any("args." in code for _, code in blocks)  # the scripts' own names stay out
    sample = (
        "#### timm's `train.py` (v1.0.28 and main)\n##### timm, fast path\n```python\nargs.x\n```\n"
        "## Next\n```python\n# fragment of x.py\ny\n```\n"
    )
    assert python_blocks(sample) == []
    assert python_blocks("## A\n```python\nprint(1)\n```\n") == [(2, "print(1)\n")]


@pytest.fixture(scope="module")
def readme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import torchvision

    from forcomp import BuildConfig, build_cache

    root = tmp_path_factory.mktemp("readme")
    for split, per_class in (("train", 4), ("val", 3)):
        source = make_imagefolder(root / "imagenet" / split, per_class=per_class)
        for cls, wnid in zip(CLASSES, WNIDS, strict=True):
            (source / cls).rename(source / wnid)
        summary = build_cache(
            source, root / "cache", BuildConfig(split=split, segmenter="classical", inpainter="telea")
        )
        assert summary.exit_code == 0, summary.format()
    (root / "weights").mkdir()
    torch.save(torchvision.models.resnet18().state_dict(), root / "weights" / "resnet18.pth")
    return root


def as_run_here(code: str) -> str:
    """The block with only the GPU stubbed: ``device="cuda"`` → ``"cpu"`` on a machine without one."""
    import torch

    if torch.cuda.is_available():
        return code
    return re.sub(r"""device=(["'])cuda(:\d+)?\1""", 'device="cpu"', code)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("line", "code"),
    [
        pytest.param(n, code, id=f"README.md:{n}")
        for n, code in python_blocks(README.read_text(encoding="utf-8"))
    ],
)
def test_readme_python_block_runs_as_written(readme_dir: Path, line: int, code: str) -> None:
    script = readme_dir / f"readme_block_{line}.py"
    script.write_text(as_run_here(code), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, script.name], cwd=readme_dir, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"README.md line {line}:\n{code}\n--- stderr:\n{proc.stderr[-4000:]}"


# ---------------------------------------------------------------- references to files

# Developer notes that are not part of the repository; users never have them.
NOT_IN_REPO = ("METRICS.md", "DESIGN.md", "STYLE.md", "../shared", "work/shared")
# Paths named in the docs that are the user's own files or outputs, not the repository's.
USER_FILES = re.compile(r"^(weights/.+\.(pth|pt|ckpt|safetensors)|benchmarks/results/.*|weights/NAME\..*)$")
REPO_PATH = re.compile(
    r"(?<![\w/.])((?:\.\./)*(?:\.ci|benchmarks|docs|scripts|tests|notebooks|weights|forcomp)/[\w./-]*\w)"
)
MD_NAME = re.compile(r"(?<![\w/.-])([A-Z][A-Z_]*\.md)\b")
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s#]+)")


def _texts() -> list[tuple[Path, str]]:
    import json

    files = sorted((ROOT / "forcomp").rglob("*.py")) + [README, ROOT / "docs" / "metrics.md"]
    texts = [(p, p.read_text(encoding="utf-8")) for p in files]
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    texts.append((NOTEBOOK, "\n".join("".join(c["source"]) for c in nb["cells"])))
    return texts


def _markdown_names() -> set[str]:
    names = set()
    for _dir, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("mutants", "node_modules")]
        names.update(f for f in files if f.endswith(".md"))
    return names


def missing_references(path: Path, text: str, have: set[str] | None = None) -> list[str]:
    """What ``text`` (from ``path``) points at that the repository does not have."""
    bad = [name for name in NOT_IN_REPO if name in text]
    names = {m.group(1) for m in MD_NAME.finditer(text)}
    have = _markdown_names() if have is None else have
    bad += sorted(n for n in names if n not in have)
    refs = {m.group(1) for m in REPO_PATH.finditer(text)}
    if path.suffix == ".md":
        refs |= {m.group(1) for m in LINK.finditer(text)}
    for ref in sorted(refs):
        ref = ref.rstrip(".,:;")
        if USER_FILES.match(ref):
            continue
        if not ((ROOT / ref).exists() or (path.parent / ref).exists()):
            bad.append(ref)
    return bad


def test_docs_help_and_notebook_point_only_at_files_the_repository_has():
    have = _markdown_names()
    found = {str(p.relative_to(ROOT)): missing_references(p, t, have) for p, t in _texts()}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_reference_check_sees_a_missing_file():
    assert missing_references(README, "see METRICS.md and [x](docs/nope.md), docs/metrics.md") == [
        "METRICS.md",
        "METRICS.md",
        "docs/nope.md",
    ]
    assert missing_references(README, "definitions in ../shared/notes") == ["../shared"]


def test_readme_links_the_metric_definitions_and_the_notebook():
    text = README.read_text(encoding="utf-8")
    assert "(docs/metrics.md)" in text and "(notebooks/quickstart.ipynb)" in text
