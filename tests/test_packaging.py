"""Packaging: every package folder ships, under the tta namespace only."""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner

import tta
from tta.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


def _declared_packages() -> set[str]:
    with open(REPO / "pyproject.toml", "rb") as f:
        return set(tomllib.load(f)["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared():
    """A package folder missing from pyproject's explicit list would not install."""
    roots = {"tta": REPO / "tta", "tta.cli": REPO / "cli", "tta.corruptions": REPO / "corruptions"}
    found = set()
    for pkg, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            found.add(".".join((pkg, *rel)))
    assert found <= _declared_packages(), f"add to pyproject packages: {sorted(found - _declared_packages())}"


def test_every_data_file_is_declared_package_data():
    """Templates and the wnid list ship only through pyproject's package-data: a moved file must move its entry."""
    with open(REPO / "pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    shipped = set()
    for pkg, patterns in declared.items():
        root = REPO.joinpath(*pkg.split("."))
        for pattern in patterns:
            found = set(root.glob(pattern))
            assert found, f"package-data {pkg}: {pattern} matches no file under {root}"
            shipped |= found
    data = {p for ext in ("*.j2", "*.txt") for p in (REPO / "tta").rglob(ext)}
    assert data <= shipped, f"add to pyproject package-data: {sorted(str(p.relative_to(REPO)) for p in data - shipped)}"


def test_no_generic_top_level_names_are_importable_from_tta():
    assert tta.cli.__name__ == "tta.cli"
    assert "cli" not in sys.modules and "corruptions" not in sys.modules


def test_cli_version_and_listings():
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and tta.__version__ in result.output
    result = runner.invoke(cli, ["list", "methods"])
    assert result.exit_code == 0
    for name in tta.list_methods():
        assert any(line.startswith(name + " ") for line in result.output.splitlines())
    result = runner.invoke(cli, ["list", "models"])
    assert "wrn-28-10" in result.output and "Standard" in result.output


def test_corruptions_is_a_leaf_that_never_imports_the_dataset_readers() -> None:
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "corruptions"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name in FORMATS:  # the file formats it shares with the readers
                    continue
                assert not name.startswith(("tta.data", "tta.training", "tta.cli")), f"{path.name} imports {name}"


#: the modules of tta.data that tta.corruptions may import: formats, not readers
FORMATS = ("tta.data.manifest", "tta.data.imagesets")


def test_the_shared_file_formats_load_without_the_dataset_readers() -> None:
    """tta/data/__init__.py imports nothing, so the generator's use of the formats does not load the readers."""
    import subprocess  # noqa: PLC0415

    code = ("import sys, tta.data.manifest, tta.data.imagesets, tta.corruptions.generate, tta.corruptions.sources; "
            "print(sorted(m for m in sys.modules if m.startswith('tta.data')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(sorted(("tta.data", *FORMATS))), out


def test_distribution_name_is_ours_and_every_install_hint_uses_it():
    """The index's `tta` is an unrelated project: an install hint naming it would install that one."""
    import re

    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == tta.DISTRIBUTION != "tta"
    extras = set(project["optional-dependencies"])
    hint = re.compile(r"pip install (?:-\S+ )*'?([A-Za-z0-9_.-]+)\[([a-z,]+)\]")
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "tta").rglob("*.py"),
             *(REPO / "cli").glob("*.py"), *(REPO / "tests").glob("*.py")]
    found = 0
    for path in files:
        for dist, wanted in hint.findall(path.read_text()):
            if dist == ".":
                continue
            found += 1
            assert dist == tta.DISTRIBUTION, f"{path.name}: pip install '{dist}[{wanted}]'"
            assert set(wanted.split(",")) <= extras, f"{path.name}: unknown extra in [{wanted}]"
    assert found >= 8


def test_installed_version_is_found_under_the_distribution_name():
    from importlib.metadata import version

    assert tta.__version__ == version(tta.DISTRIBUTION)


def test_ci_runs_the_oldest_claimed_python_on_the_version_dependent_modules():
    """CI's second job runs Debian's Python 3.11.2 (requires-python's floor) on the tests of every module that
    touches a version-dependent part of the standard library; the files it names must exist and cover them."""
    import re

    with open(REPO / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["requires-python"] == ">=3.11"
    ci = (REPO / ".ci" / "run").read_text()
    named = set(re.findall(r"tests/(test_\w+\.py)", ci))
    assert named and all((REPO / "tests" / name).is_file() for name in named), sorted(named)
    users = {"tarfile": "test_data_download.py", "tomllib": "test_sweep_grid_checks.py",
             "importlib.metadata": "test_packaging.py"}
    for module, test in users.items():
        assert test in named, f"{module} is exercised by {test}, which the oldest-Python job must run"
        assert module in (REPO / "tests" / test).read_text() or module in "".join(
            p.read_text() for p in (REPO / "tta").rglob("*.py") if f"import {module}" in p.read_text())
