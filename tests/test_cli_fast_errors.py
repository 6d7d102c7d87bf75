"""Mistakes on the command line fail in a fraction of a second, before torch loads, with a "did you mean"."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from tta.cli.main import cli
from tta.errors import InputError, TTAError
from tta.names import METHOD_OPTIONS, SHIFTS, STATS_POLICIES, WITHHELD_METHODS, parse_shift, resolve_method
from tta.precheck import check_settings

PROBE = """
import sys
from tta.cli.main import cli
try:
    cli.main({args!r}, prog_name="tta")
except SystemExit as exc:
    code = exc.code
print("exit", code, "torch", "torch" in sys.modules, "numpy", "numpy" in sys.modules)
"""


def test_the_torch_free_tables_match_the_registries():
    """tta.names repeats the registries so that the CLI can check names without torch: they must not drift."""
    from tta.methods import METHODS, STATS
    from tta.methods._recipe import WITHHELD
    from tta.streams.shifts import SHIFTS as REGISTERED_SHIFTS

    registered = {name: tuple(recipe.options.names) for name, recipe in METHODS.items()}
    for name in registered.keys() | METHOD_OPTIONS.keys():
        assert METHOD_OPTIONS.get(name) == registered.get(name), f"update tta/names.py METHOD_OPTIONS[{name!r}]"
    assert set(STATS_POLICIES) == set(STATS), "update tta/names.py STATS_POLICIES"
    assert set(SHIFTS) == set(REGISTERED_SHIFTS), "update tta/names.py SHIFTS"
    assert set(WITHHELD_METHODS) == set(WITHHELD), "update tta/names.py WITHHELD_METHODS"


def _probe(args: list[str]) -> tuple[str, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=60)
    return done.stdout + done.stderr, time.perf_counter() - start


@pytest.mark.parametrize("args,message", [
    (["run", "--method", "tnet"], "unknown method 'tnet' (did you mean 'tent'?)"),
    (["run", "--method", "tent", "-O", "lrr=0.1"], "no option 'lrr' (did you mean 'lr'?)"),
    (["run", "--shift", "contiual"], "unknown shift 'contiual' (did you mean 'continual'?)"),
])
def test_a_mistake_fails_in_a_subprocess_without_importing_torch(args, message):
    out, seconds = _probe(args)
    assert message in out, out
    assert "exit 2 torch False numpy False" in out, out
    assert "Traceback" not in out
    # wall time of the whole subprocess, interpreter start included; the least of three tries, so another
    # process busy on the same cores does not decide it (torch alone takes several seconds to import here)
    best = min([seconds] + [_probe(args)[1] for _ in range(2)])
    assert best < 1.0, f"{args}: {best:.2f} s"


def test_method_names_resolve_across_case_and_separators():
    assert resolve_method("TENT") == "tent" and resolve_method("Unmix_TNS") == "unmix-tns"
    assert check_settings({"method": "SHOT_IM"})["method"] == "shot-im"
    with pytest.raises(TTAError, match="did you mean 'cotta'"):
        resolve_method("cota")


def test_run_and_sweep_share_the_shift_syntax():
    assert parse_shift("mixed@0.1") == ("mixed", 0.1, False)
    assert parse_shift("continual@sorted") == ("continual", None, True)
    assert parse_shift("Continual@0") == ("continual", 0.0, False)  # δ = 0: class-sorted
    settings = check_settings({"shift": "mixed@0.1", "delta": None})
    assert (settings["shift"], settings["delta"]) == ("mixed", 0.1)
    with pytest.raises(InputError, match="both set delta"):
        check_settings({"shift": "mixed@0.1", "delta": 0.5})


@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], "--batch-size must be >= 1"),
    (["--domains", ","], "--domains needs at least one corruption"),
    (["--loader-workers", "-2"], "--loader-workers must be >= 0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be a number of seconds >= 0"),
    (["--dataset", "cifar10", "--imagenet-subset", "12"], "--imagenet-subset applies to ImageNet-C only"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--severity", "6"], "--severity must be 1..5"),
    (["--shift", "mixed@0.1", "--delta", "0.3"], "both set delta"),
])
def test_values_accepted_quietly_before_are_one_line_errors(args, message, tmp_path):
    """#32: these ran (batch 0 as batch 64, ',' as all 15 domains, ...) and exited 0."""
    result = CliRunner().invoke(cli, ["run", *args, "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1, result.output
    assert not (tmp_path / "r.json").exists()


@pytest.mark.realdata
def test_imagenet_subset_is_refused_for_cifar_found_by_auto(small_cifar_c_dir, resnet20_checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["run", "-q", "--data-dir", str(small_cifar_c_dir), "--imagenet-subset", "12",
                                      "--model", "resnet20", "--checkpoint", str(resnet20_checkpoint),
                                      "--domains", "noise_low", "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "--imagenet-subset applies to ImageNet-C only" in result.output


def test_dirichlet_error_names_the_images_needed():
    from tta.streams.dirichlet import dirichlet_order

    labels = np.repeat(np.arange(10), 10)  # 100 samples: every chunk would need exactly 10
    with pytest.raises(InputError, match=r"pass --n-examples 150 or more"):
        dirichlet_order(labels, 0.1, np.random.default_rng(0))
