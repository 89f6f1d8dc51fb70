"""Text that names code must name what the code has: the README's optimizer table names each optimizer's own
parameters (it once listed IVON's ``h0 / b1 / b2``, which are ``hess_init / beta1 / beta2`` in the code), and
docs/architecture.md names folders and modules that exist."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import aipflow.optim

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_optimizer_table_names_real_parameters():
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if re.match(r"\| `[A-Za-z]+` .*\|", line)]
    checked = 0
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if len(cells) < 3:
            continue
        name, defaults = cells[0], " ".join(cells[2:])
        cls = getattr(aipflow.optim, name.split("`")[1], None)
        if not inspect.isclass(cls):
            continue
        parameters = set(inspect.signature(cls.__init__).parameters)
        named = set(re.findall(r"`([a-z_][a-z_0-9]*)`", defaults))
        assert named <= parameters, f"{name}: the README names {sorted(named - parameters)}, not parameters"
        checked += bool(named)
    assert checked >= 4  # SAM, ASAM, BSAM, IVON at least


def test_the_architecture_page_names_paths_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"`((?:aipflow|benchmarks|tests|plugins|docs)/[\w/.]*[\w/])`", text))
    missing = sorted(p for p in paths if "<" not in p and not (ROOT / p).exists())
    assert len(paths) > 10 and not missing, missing
