"""The ViT backbones: norm placement (Pre-LN, Post-LN, LNS, Mix-LN), token norms, adapters, training."""
from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tta
from tta.cli.main import cli
from tta.errors import CheckpointError, InputError, TTAError
from tta.models.vit import Block, build_vit
from tta.norms import BlockNorms, PowerNorm1d, block_plan, norm_factory, token_kinds
from tta.training import TrainConfig, train

VITS = ("vit-cifar", "vit-cifar-post", "vit-cifar-lns", "vit-cifar-mixln")


# ---------------------------------------------------------------- placement plans
def test_mix_ln_post_blocks_match_the_official_post_num() -> None:
    # MixLN runs: POST_NUM 3 for the 12-layer model, 6 for the 24-layer one (alpha = 0.25)
    for depth, n_post in ((12, 3), (24, 6), (6, 1), (3, 0)):
        plan = block_plan(depth, "mix-ln")
        assert [a.post for a in plan] == [True] * n_post + [False] * (depth - n_post)


def test_lns_scales_block_l_by_one_over_sqrt_l() -> None:
    plan = block_plan(5, "lns")
    assert all(not a.post for a in plan)
    assert [a.scale for a in plan] == pytest.approx([1 / math.sqrt(layer) for layer in range(1, 6)])
    assert plan[0].scale == 1.0 and plan[3].scale == pytest.approx(0.5)


def test_unknown_scheme_and_bad_fraction_are_clear_errors() -> None:
    with pytest.raises(InputError, match="choose one of: pre, post, lns, mix-ln"):
        block_plan(6, "sandwich")
    with pytest.raises(InputError, match="0.25"):
        block_plan(6, "mix-ln", post_fraction=1.5)


# ---------------------------------------------------------------- blocks vs torch's own transformer layer
def _torch_layer_like(block: Block, norm_first: bool) -> nn.TransformerEncoderLayer:
    d = block.norm1.normalized_shape[0]
    ref = nn.TransformerEncoderLayer(d, block.attn.heads, block.mlp[0].out_features, dropout=0.0,
                                     activation="gelu", batch_first=True, norm_first=norm_first).double()
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(block.attn.proj.weight)
        ref.self_attn.out_proj.bias.copy_(block.attn.proj.bias)
        ref.linear1.load_state_dict(block.mlp[0].state_dict())
        ref.linear2.load_state_dict(block.mlp[2].state_dict())
        ref.norm1.load_state_dict(block.norm1.state_dict())
        ref.norm2.load_state_dict(block.norm2.state_dict())
    return ref


def _random_block(post: bool, scale: float = 1.0) -> Block:
    torch.manual_seed(0)
    block = Block(24, 3, 40, nn.LayerNorm, BlockNorms(post=post, scale=scale)).double()
    with torch.no_grad():  # non-trivial norm affine, so a misplaced norm shows
        for norm in (block.norm1, block.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.3, 0.3)
    return block


@pytest.mark.parametrize("post", [False, True])
def test_pre_and_post_blocks_equal_torch_transformer_encoder_layer(post: bool) -> None:
    block = _random_block(post)
    ref = _torch_layer_like(block, norm_first=not post)
    x = torch.randn(4, 9, 24, dtype=torch.float64)
    torch.testing.assert_close(block(x), ref(x))


def test_lns_block_equals_pre_block_with_norm_affine_divided_by_sqrt_l() -> None:
    layer = 4
    lns = _random_block(post=False, scale=1 / math.sqrt(layer))
    ref = _random_block(post=False)
    with torch.no_grad():  # LN(x)/sqrt(l) = (gamma/sqrt(l)) x_hat + beta/sqrt(l)
        for norm in (ref.norm1, ref.norm2):
            norm.weight.div_(math.sqrt(layer))
            norm.bias.div_(math.sqrt(layer))
    x = torch.randn(3, 7, 24, dtype=torch.float64)
    torch.testing.assert_close(lns(x), ref(x))
    assert not torch.allclose(lns(x), _random_block(post=False)(x))


# ---------------------------------------------------------------- registered backbones
def test_registered_vits_arrange_their_norms_as_named() -> None:
    posts = {name: [b.post for b in tta.build_model(name).blocks] for name in VITS}
    assert posts["vit-cifar"] == [False] * 6 and posts["vit-cifar-lns"] == [False] * 6
    assert posts["vit-cifar-post"] == [True] * 6
    assert posts["vit-cifar-mixln"] == [True] + [False] * 5
    assert isinstance(tta.build_model("vit-cifar-post").norm, nn.Identity)
    assert isinstance(tta.build_model("vit-cifar-mixln").norm, nn.LayerNorm)
    scales = [b.scale for b in tta.build_model("vit-cifar-lns").blocks]
    assert scales == pytest.approx([1 / math.sqrt(i) for i in range(1, 7)])


@pytest.mark.parametrize("kind", ["ln", "rmsnorm", "crmsnorm", "powernorm"])
def test_every_token_kind_builds_a_vit_that_round_trips_through_a_checkpoint(kind: str, tmp_path) -> None:
    torch.manual_seed(1)
    model = tta.build_model("vit-cifar-lns", norm=kind)
    norms = {type(m) for m in model.modules() if m.__class__.__name__.endswith(("Norm", "Norm1d"))}
    assert norms == {norm_factory(kind).spec.tokens}
    model.train()(torch.rand(6, 3, 32, 32))  # a training step moves PowerNorm's running statistics
    torch.save(model.state_dict(), tmp_path / "vit.pt")
    loaded = tta.load_model("vit-cifar-lns", checkpoint=tmp_path / "vit.pt", norm=kind)
    x = torch.rand(3, 3, 32, 32)
    out = loaded(x)
    assert out.shape == (3, 10) and torch.isfinite(out).all()
    torch.testing.assert_close(out, model.eval()(x))


def test_conv_only_kinds_refuse_a_vit_and_name_the_token_kinds() -> None:
    assert set(token_kinds()) == {"ln", "rmsnorm", "crmsnorm", "powernorm"}
    for kind in ("bn", "gn", "bcn", "ghost-bn"):
        with pytest.raises(InputError, match="conv feature maps only") as exc:
            tta.build_model("vit-cifar", norm=kind)
        assert "ln" in str(exc.value) and "rmsnorm" in str(exc.value)
    with pytest.raises(InputError, match="token-level norm"):
        build_vit(nn.BatchNorm2d, "pre")


def test_cnn_with_ln_still_gets_the_conv_layer() -> None:
    model = tta.build_model("resnet20", norm="ln")
    assert type(model.bn1).__name__ == "LayerNorm2d"


def test_powernorm1d_matches_its_closed_form_on_tokens() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, 6, dtype=torch.float64) * 3
    layer = PowerNorm1d(6).double().train()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    # group scaling with one group: each token over its D features; then the quadratic mean over all B*L tokens
    xs = x / torch.sqrt(x.square().mean(-1, keepdim=True) + 1e-5)
    psi2 = xs.square().mean(dim=(0, 1))
    expected = xs / torch.sqrt(psi2 + 1e-5) * layer.weight + layer.bias
    torch.testing.assert_close(layer(x), expected)
    # step 1 of the warmup: the cumulative average is psi2_B, and the EMA of psi2_B with itself stays psi2_B
    torch.testing.assert_close(layer.running_phi.flatten(), psi2)
    with pytest.raises(InputError, match=r"\(B, L, D\)"):
        layer(torch.randn(2, 6))


def test_no_pretrained_vit_says_how_to_train_one() -> None:
    with pytest.raises(CheckpointError, match="tta train --model vit-cifar"):
        tta.load_model("vit-cifar")


# ---------------------------------------------------------------- adapters on a ViT
def test_tent_on_a_vit_adapts_only_the_token_norm_affine() -> None:
    torch.manual_seed(0)
    model = tta.build_model("vit-cifar").eval()
    adapter = tta.adapt(model, method="tent")
    before = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    adapter(torch.rand(8, 3, 32, 32))
    after = adapter.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "tent changed nothing"
    assert all(".norm" in k or k.startswith("norm.") for k in changed), sorted(changed)


def test_statistics_adapters_refuse_a_vit_with_a_clear_error() -> None:
    with pytest.raises(TTAError, match="BatchNorm"):
        tta.adapt(tta.build_model("vit-cifar").eval(), method="tbn")


# ---------------------------------------------------------------- training and listing
def test_training_a_vit_uses_its_default_token_norm_and_the_vit_recipe(tiny, tmp_path) -> None:
    out = tmp_path / "vit.pt"
    cfg = TrainConfig(model="vit-cifar-mixln", data=str(tiny / "train_images.npy"), out=str(out),
                      epochs=1, batch_size=16, seed=0)
    record = train(cfg, progress=False)
    hp = record["hyperparameters"]
    assert record["norm"] == "ln" and hp["optimizer"] == "AdamW" and hp["lr"] == 1e-3 and hp["weight_decay"] == 0.05
    trained = tta.load_model("vit-cifar-mixln", checkpoint=out)
    fresh = tta.build_model("vit-cifar-mixln")
    assert not torch.equal(trained.head.weight, fresh.head.weight)


def test_cnn_recipe_stays_sgd_and_explicit_values_win() -> None:
    cnn = TrainConfig(model="resnet20", data="x", out="y")
    cnn.validate()
    assert (cnn.optimizer, cnn.lr, cnn.weight_decay, cnn.norm) == ("sgd", 0.2, 5e-4, "bn")
    vit = TrainConfig(model="vit-cifar", data="x", out="y", lr=5e-4, optimizer="sgd")
    vit.validate()
    assert (vit.optimizer, vit.lr, vit.weight_decay) == ("sgd", 5e-4, 0.05)


def test_cli_lists_the_vits_and_which_norms_reach_them() -> None:
    models = CliRunner().invoke(cli, ["list", "models"])
    assert models.exit_code == 0 and all(name in models.output for name in VITS)
    norms = CliRunner().invoke(cli, ["list", "norms"])
    blocks = {b.split()[0]: b for b in norms.output.split("\n\n") if b.strip()}
    assert "vit-cifar" in blocks["ln"] and "vit-cifar" in blocks["rmsnorm"]
    assert "vit-cifar" not in blocks["gn"] and "vit-cifar" not in blocks["bcn"]
