"""Our WRN-28-10 and ResNeXt-29 against RobustBench's own model zoo classes."""
from __future__ import annotations

import pytest
import torch

import tta
from tta.models._robustbench import import_robustbench

CASES = [("cifar_10", "Standard", "wrn-28-10"), ("cifar_100", "Hendrycks2020AugMix_ResNeXt", "resnext-29")]


@pytest.fixture(scope="module")
def zoo():
    pytest.importorskip("pyautoattack", reason="robustbench extra not installed (pip install 'tta-toolkit[robustbench]')")
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return lambda ds, name: model_dicts[BenchmarkDataset[ds]][ThreatModel.corruptions][name]["model"]()


@pytest.mark.parametrize("dataset, rb_name, ours", CASES)
def test_same_keys_shapes_and_outputs(zoo, dataset, rb_name, ours):
    torch.manual_seed(0)
    reference = zoo(dataset, rb_name).eval()
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    state = reference.state_dict()
    model = tta.build_model(ours).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in state.items()}
    model.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=1e-4)
