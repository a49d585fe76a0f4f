"""The README's "From Python" example runs as written (no torch) and prints what the README says."""

import re
import subprocess
import sys

from conftest import REPO


def from_python_block():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_readme_example_is_short_and_runs_without_torch():
    code = from_python_block()
    assert len([l for l in code.splitlines() if l.strip()]) <= 15
    assert "torch" not in code
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "LOSS attack AUC: 0.635" in out
    assert "{'clopper-pearson': 0.11, 'gdp': 0.92, 'one-run': 0.09, 'one-run-fdp': 0.13}" in out
    assert "would claim epsilon 11.47" in out
