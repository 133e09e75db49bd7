import pytest
import torch

from ferkit.training.architectures import count_params, create_architecture, list_architectures


@pytest.mark.parametrize("name", list_architectures())
@pytest.mark.parametrize("size", [48, 40])
def test_every_registered_model_runs(name: str, size: int):
    model = create_architecture(name, input_size=size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_registry_has_tutorial_baselines_and_ours():
    names = set(list_architectures())
    assert {"vgg16", "resnet34", "resnet50"} <= names
    assert any(n.startswith("fernet") for n in names)


def test_vgg16_has_13_convs_and_fc_head():
    m = create_architecture("vgg16")
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    linears = [x for x in m.modules() if isinstance(x, torch.nn.Linear)]
    assert len(convs) == 13 and len(linears) == 3


def test_resnet34_depth():
    m = create_architecture("resnet34")
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d) and x.kernel_size == (3, 3)]
    assert len(convs) == 1 + 2 * (3 + 4 + 6 + 3)  # stem + two per basic block


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        create_architecture("nope")


def test_small_model_is_small():
    assert count_params(create_architecture("fernet_s")) < 2_000_000
