"""The package layout docs/architecture.md describes: a lower layer never imports a higher one, the top of tta/
holds only the public surface and shared modules, and no two modules share a name."""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"tta": REPO / "tta", "tta.cli": REPO / "cli", "tta.corruptions": REPO / "corruptions"}

#: the modules at the top of tta/ that every layer may import; they import none of the layers
SHARED = {"errors", "atomic", "lock", "safepath", "name_registry", "names", "precheck", "runtime", "schema", "validate"}
#: the public surface at the top of tta/, placed in LAYERS by what it imports
PUBLIC = {"__init__", "__main__", "adaptation", "catalog"}
#: lowest first: each may import only those before it (and SHARED)
LAYERS = ["norms", "optim", "corruptions", "data", "streams", "models", "methods", "adaptation",
          "training", "catalog", "pipeline", "sweep", "report", "cli", "__init__", "__main__"]
#: the generator reads the two file formats of tta/data, none of its readers (tests/test_packaging.py)
EXCEPTIONS = {("corruptions", "tta.data.manifest"), ("corruptions", "tta.data.imagesets")}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in ROOTS.items():
        for path in root.rglob("*.py"):
            out[".".join([pkg, *path.relative_to(root).with_suffix("").parts])] = path
    return out


def _unit(module: str) -> str:
    """The layer of a module: its subpackage, or its own name at the top of tta."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(module: str, path: Path) -> set[str]:
    found = set()
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            found |= {target} if node.module else {f"{target}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {t.removesuffix(".__init__") for t in found if t == "tta" or t.startswith("tta.")}


def test_the_top_of_tta_holds_only_the_public_surface_and_shared_modules():
    top = {p.stem for p in ROOTS["tta"].glob("*.py")}
    assert top == SHARED | PUBLIC, f"place {sorted(top - SHARED - PUBLIC)} in the subpackage it serves"


def test_a_lower_layer_never_imports_a_higher_one():
    folders = {p.name for p in ROOTS["tta"].iterdir() if (p / "__init__.py").is_file()} | {"cli", "corruptions"}
    assert folders <= set(LAYERS), f"add {sorted(folders - set(LAYERS))} to LAYERS here and to docs/architecture.md's tree"
    modules = _modules()
    known = {m.removesuffix(".__init__") for m in modules}
    wrong = []
    for module, path in modules.items():
        unit = _unit(module)
        for target in _imports(module, path):
            if target not in known:  # a name from a package (``from . import __version__``)
                target = target.rsplit(".", 1)[0]
            to = _unit(target)
            if target in ("tta", "tta.__init__") or to == unit or (unit, target) in EXCEPTIONS:
                continue  # every import of tta.x runs tta/__init__.py first anyway
            if unit in SHARED:
                ok = to in SHARED
            else:
                ok = to in SHARED or LAYERS.index(to) < LAYERS.index(unit)
            if not ok:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_no_two_modules_share_a_name():
    """Not even with a leading underscore (``_options`` and ``options``); package inits do not count."""
    names = Counter(path.stem.lstrip("_") for path in _modules().values() if path.stem not in ("__init__", "__main__"))
    assert not {n for n, k in names.items() if k > 1}, sorted(n for n, k in names.items() if k > 1)


#: names registered by another family's file (ETA is EATA without its Fisher regularizer)
FAMILIES = {"eta": "eata"}


def test_every_plain_module_of_methods_is_one_method_family_and_the_machinery_is_underscored():
    """docs/methods.md: a method is one file plus its registration; machinery and helpers start with ``_``."""
    from tta.methods import METHODS, STATS  # noqa: PLC0415  (loads torch; the checks above need none)

    plain = {p.stem for p in (ROOTS["tta"] / "methods").glob("*.py") if not p.stem.startswith("_")}
    families = {FAMILIES.get(name, name).replace("-", "_") for name in METHODS}
    assert plain == families, (f"not a registered method, underscore it: {sorted(plain - families)}; "
                               f"registered without a file of its own: {sorted(families - plain)}")
    for name in METHODS:  # and each is built in its family's file (a statistics policy by its policy class)
        built = STATS.get(name) if name in STATS else METHODS.get(name).build_fn
        assert built.__module__ == f"tta.methods.{FAMILIES.get(name, name).replace('-', '_')}", (name, built)


def test_the_architecture_tree_names_every_folder_of_tta():
    tree = (REPO / "docs" / "architecture.md").read_text()
    folders = sorted(p.name for p in ROOTS["tta"].iterdir() if (p / "__init__.py").is_file())
    missing = [f for f in folders if f"  {f}/ " not in tree]
    assert not missing, f"docs/architecture.md's Layout tree lacks {missing}"
