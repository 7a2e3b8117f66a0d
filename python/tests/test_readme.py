"""The README's Python example, run as written (in a scratch directory), and its printed line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import import_or_skip

README = Path(__file__).resolve().parents[2] / "README.md"


def example() -> tuple[str, str]:
    """The code block after the `python-example` marker, and the line the README says it prints."""
    text = README.read_text()
    after = text[text.index("<!-- python-example") :]
    code = re.search(r"```python\n(.*?)```", after, re.S).group(1)
    printed = re.search(r"prints `([^`]*)`", after).group(1)
    return code, printed


def test_the_readme_example_runs_as_written(tmp_path):
    import_or_skip("torch")
    import_or_skip("torchvision")
    code, printed = example()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == printed
    assert (tmp_path / "resnet18-pruned.pt").exists()
