import pytest
import torch

from pipeline.fusion.cross_modal import FUSIONS
from pipeline.heads import HEADS
from pipeline.models import BranchSpec, MultiBranchClassifier


def fusion(name, dims=(5, 7), **options):
    cls = FUSIONS.get(name)
    return cls(list(dims), cls.Config(**options))


@pytest.mark.parametrize("name", FUSIONS.names())
def test_fusion_shapes_and_gradients(name):
    module = fusion(name)
    x, y = torch.randn(4, 5, requires_grad=True), torch.randn(4, 7, requires_grad=True)
    out = module([x, y])
    assert out.shape == (4, module.out_dim)
    out.pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_fbp_is_power_and_l2_normalised_sum_over_factors():
    module = fusion("fbp", factors=3, out_dim=4, dropout=0.0).eval()
    x, y = torch.randn(2, 5), torch.randn(2, 7)
    joint = (module.project_x(x) * module.project_y(y)).view(2, 4, 3).sum(-1)
    expected = torch.nn.functional.normalize(torch.sign(joint) * joint.abs().sqrt(), dim=1)
    torch.testing.assert_close(module([x, y]), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(module([x, y]).norm(dim=1), torch.ones(2))


def test_fbp_refuses_three_modalities():
    with pytest.raises(ValueError, match="exactly two"):
        fusion("fbp", dims=(3, 3, 3))


@pytest.mark.parametrize("name", FUSIONS.names())
def test_clip_with_a_missing_modality_is_still_predicted(name):
    torch.manual_seed(0)
    specs = [
        BranchSpec("face", 6, "attention", HEADS.get("attention").Config()),
        BranchSpec("voice", 4, "stats", HEADS.get("stats").Config()),
    ]
    model = MultiBranchClassifier(specs, 3, name, FUSIONS.get(name).Config()).eval()
    face = (torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    voice_mask = torch.tensor([[True] * 8, [False] * 8])  # clip 1 has no audio
    logits = model({"face": face, "voice": (torch.randn(2, 8, 4), voice_mask)})
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    # The missing side enters as the learned "absent" embedding, whatever its padding holds.
    other = model({"face": face, "voice": (torch.randn(2, 8, 4) * 50, voice_mask)})
    torch.testing.assert_close(logits[1], other[1])
