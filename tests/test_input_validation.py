"""A batch the model cannot take is refused with one line, never scored silently (wrong range, channels, size)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tta
from tta import build_model
from tta.cli.main import cli
from tta.data.check import check_cifar_c
from tta.errors import InputError


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("resnet20").eval()


def _x(n=4, side=32, seed=0):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["source", "tbn"])
def test_pixels_on_a_0_255_scale_are_refused(net, method):
    with pytest.raises(InputError, match=r"\[0, 1\].*divide by 255"):
        tta.adapt(net, method)(_x() * 255)


def test_normalized_pixels_are_refused(net):
    with pytest.raises(InputError, match="undo the normalization"):
        tta.adapt(net, "source")((_x() - 0.5) / 0.25)


def test_pixels_in_range_pass_and_the_check_is_exact_at_the_edges(net):
    x = _x()
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    assert tta.adapt(net, "source")(x).shape == (4, 10)


def test_one_channel_images_are_refused(net):
    with pytest.raises(InputError, match="3-channel images, got 1 channels"):
        tta.adapt(net, "source")(_x()[:, :1])


def test_nhwc_tensors_are_refused_with_the_permute_fix(net):
    with pytest.raises(InputError, match=r"NHWC\? use x.permute\(0, 3, 1, 2\)"):
        tta.adapt(net, "source")(_x().permute(0, 2, 3, 1).contiguous())


def test_float64_is_refused_with_the_conversion(net):
    with pytest.raises(InputError, match=r"float64; convert with x.float\(\)"):
        tta.adapt(net, "source")(_x().double())


def test_another_size_warns_for_a_cnn_and_fails_for_a_vit(net, caplog):
    with caplog.at_level(logging.WARNING, logger="tta.validate"):
        a = tta.adapt(net, "source")
        a(_x(side=64))
        a(_x(side=64))
    warned = [r for r in caplog.records if "built for 32x32 images, got 64x64" in r.getMessage()]
    assert len(warned) == 1  # once per model, not per batch
    vit = build_model("vit-cifar")
    with pytest.raises(InputError, match="resize the images to 32x32"):
        tta.adapt(vit.eval(), "source")(_x(side=64))


def test_load_model_takes_a_device(tmp_path, net):
    ckpt = tmp_path / "r.pt"
    torch.save(net.state_dict(), ckpt)
    model = tta.load_model("resnet20", checkpoint=ckpt, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
    with pytest.raises(InputError, match="--device cpu"):
        tta.load_model("resnet20", checkpoint=ckpt, device="mps" if not torch.backends.mps.is_available() else "xla")


# -- through `tta run` and `tta data check` ---------------------------------------------------------------------
N = 20


def _layout(tmp_path, images):
    folder = tmp_path / "CIFAR-10-C"
    folder.mkdir()
    np.save(folder / "gaussian_noise.npy", images)
    np.save(folder / "labels.npy", np.tile(np.arange(N) % 10, 5).astype(np.uint8))
    return tmp_path


def _run(tmp_path, data_dir, net):
    ckpt = tmp_path / "r.pt"
    torch.save(net.state_dict(), ckpt)
    out = tmp_path / "o" / "r.json"
    result = CliRunner().invoke(cli, ["run", "-q", "--data-dir", str(data_dir), "--model", "resnet20", "--checkpoint",
                                      str(ckpt), "--domains", "gaussian_noise", "--batch-size", "10", "--output", str(out)])
    return result, out


def test_run_refuses_a_float_file_saved_on_a_0_255_scale(tmp_path, net):
    rng = np.random.default_rng(0)
    data = _layout(tmp_path, rng.integers(0, 256, (5 * N, 32, 32, 3)).astype(np.float32))
    result, out = _run(tmp_path, data, net)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: images must be floats in [0, 1]")
    assert not out.exists()


def test_run_refuses_images_of_another_size_than_the_model(tmp_path, net):
    rng = np.random.default_rng(0)
    data = _layout(tmp_path, rng.integers(0, 256, (5 * N, 64, 64, 3), dtype=np.uint8))
    result, out = _run(tmp_path, data, net)
    assert result.exit_code == 2, result.output
    assert "64x64 images but the model was built for 32x32" in result.output and not out.exists()


def test_data_check_flags_a_float_file_outside_0_1(tmp_path):
    rng = np.random.default_rng(0)
    data = _layout(tmp_path, rng.integers(0, 256, (5 * N, 32, 32, 3)).astype(np.float32))
    rows = {name: (ok, detail) for name, ok, detail in check_cifar_c(data)}
    ok, detail = rows["gaussian_noise.npy"]
    assert not ok and "float values in [0, 255]" in detail and "divide by 255" in detail
    np.save(data / "CIFAR-10-C" / "gaussian_noise.npy", rng.random((5 * N, 32, 32, 3), dtype=np.float32))
    ok, detail = {n: (o, d) for n, o, d in check_cifar_c(data)}["gaussian_noise.npy"]
    assert ok and "float in [0, 1]" in detail
