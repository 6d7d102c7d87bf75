"""swap_norm, norm_factory, build_model/load_model with a norm, and how adapters meet norms."""
from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tta
from tta.cli.main import cli
from tta.errors import InputError, TTAError, UnknownNameError
from tta.norms import NORMS, BatchChannelNorm2d, GhostBatchNorm2d, ScaledStdConv2d, WSConv2d, get_norm, norm_factory, swap_norm


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    model = tta.build_model("resnet20")
    with torch.no_grad():  # non-trivial BN state so copies are visible
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("kind", ["ghost-bn", "gn", "ln", "in", "powernorm"])
def test_swap_preserves_parameter_count_for_per_channel_affine_norms(kind: str) -> None:
    model = _bn_model()
    before = _n_params(model)
    swap_norm(model, kind)
    assert _n_params(model) == before
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_swap_copies_affine_and_keeps_mode() -> None:
    model = _bn_model()
    gamma = model.layer1[0].bn1.weight.detach().clone()
    swap_norm(model, "gn")
    torch.testing.assert_close(model.layer1[0].bn1.weight.detach(), gamma)
    assert not model.layer1[0].bn1.training
    fresh = swap_norm(_bn_model(), "gn", copy_affine=False)
    torch.testing.assert_close(fresh.layer1[0].bn1.weight.detach(), torch.ones_like(gamma))


def test_swap_to_ghost_bn_keeps_eval_outputs_exactly() -> None:
    model = _bn_model()
    x = torch.rand(4, 3, 32, 32)
    before = model(x)
    swap_norm(model, "ghost-bn", virtual_batch_size=2)
    assert isinstance(model.bn1, GhostBatchNorm2d) and model.bn1.virtual_batch_size == 2
    torch.testing.assert_close(model(x), before)


def test_swap_to_bcn_adds_group_affine_and_ws_convs() -> None:
    model = _bn_model()
    before = _n_params(model)
    x = torch.rand(2, 3, 32, 32)
    swap_norm(model, "bcn", num_groups=4)
    bcns = [m for m in model.modules() if isinstance(m, BatchChannelNorm2d)]
    assert len(bcns) == 19 and _n_params(model) == before + 19 * 2 * 4
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(c, WSConv2d) for c in convs)
    # BN state went into the BN part unchanged
    ref = _bn_model()
    torch.testing.assert_close(model.bn1.bn.running_var, ref.bn1.running_var)
    assert model(x).shape == (2, 10)


def test_swap_to_scaled_ws_removes_norms() -> None:
    model = swap_norm(_bn_model(), "scaled-ws")
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules())
    assert all(isinstance(m, ScaledStdConv2d) for m in model.modules() if isinstance(m, nn.Conv2d))


def test_swap_on_bn_free_model_raises_with_fix() -> None:
    model = tta.build_model("resnet20", norm="gn")
    with pytest.raises(TTAError, match="build_model"):
        swap_norm(model, "ln")


def test_build_model_with_bcn_has_ws_convs_and_state_dict_roundtrips(tmp_path) -> None:
    torch.manual_seed(0)
    model = tta.build_model("resnet20", norm="bcn")
    assert isinstance(model.conv1, WSConv2d) and isinstance(model.layer3[2].conv2, WSConv2d)
    path = tmp_path / "bcn.pt"
    torch.save(model.state_dict(), path)
    loaded = tta.load_model("resnet20", checkpoint=path, norm="bcn")
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    with pytest.raises(tta.CheckpointError, match="does not match"):
        tta.load_model("resnet20", checkpoint=path)  # a BN model cannot take BCN weights


def test_norm_factory_errors_name_the_fix() -> None:
    with pytest.raises(UnknownNameError, match="choose one of"):
        norm_factory("batchchannel")
    with pytest.raises(InputError, match="num_groups"):
        norm_factory("gn", groups=4)
    assert get_norm("gbn").name == "ghost-bn"
    assert norm_factory("gn", num_groups=4)(16).num_groups == 4


def _tbn_applies(model: nn.Module) -> bool:
    try:
        tta.adapt(model, method="tbn")
    except TTAError:
        return False
    return True


@pytest.mark.parametrize("kind", sorted(NORMS))
def test_listing_flag_running_statistics_matches_what_tbn_does(kind: str) -> None:
    model = tta.build_model("resnet20", norm=kind).eval()
    assert _tbn_applies(model) == get_norm(kind).running_statistics


def test_tent_adapts_gn_affine_when_there_is_no_bn() -> None:
    if "tent" not in tta.list_methods():
        pytest.skip("tent is not registered in this build")
    torch.manual_seed(0)
    model = tta.build_model("resnet20", norm="gn").eval()
    adapter = tta.adapt(model, method="tent")
    before = adapter.model.bn1.weight.detach().clone()
    adapter(torch.rand(8, 3, 32, 32))
    assert not torch.equal(adapter.model.bn1.weight.detach(), before)


def test_cli_list_norms_states_adapters_per_norm() -> None:
    result = CliRunner().invoke(cli, ["list", "norms"])
    assert result.exit_code == 0, result.output
    for kind in NORMS:
        assert any(line.startswith(kind) for line in result.output.splitlines())
    bcn_block = result.output.split("bcn")[1].split("\n\n")[0]
    assert "tbn" in bcn_block
    gn_line = [ln for ln in result.output.split("\n\n") if ln.startswith("gn ")][0]
    assert "no BatchNorm" in gn_line
