import pytest
import torch

from pipeline.fusion.cross_modal import FUSIONS
from pipeline.heads import HEADS
from pipeline.models import BranchSpec, MultiBranchModel


def fusion(name, dims=(5, 7), **options):
    cls = FUSIONS.get(name)
    return cls(list(dims), cls.Config(**options))


CLIP_FUSIONS = [n for n in FUSIONS.names() if not FUSIONS.get(n).sequential]
SEQUENCE_FUSIONS = [n for n in FUSIONS.names() if FUSIONS.get(n).sequential]


@pytest.mark.parametrize("name", CLIP_FUSIONS)
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
    model = MultiBranchModel(specs, 3, name, FUSIONS.get(name).Config()).eval()
    face = (torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    voice_mask = torch.tensor([[True] * 8, [False] * 8])  # clip 1 has no audio
    logits = model({"face": face, "voice": (torch.randn(2, 8, 4), voice_mask)})
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    # The missing side enters as the learned "absent" embedding, whatever its padding holds.
    other = model({"face": face, "voice": (torch.randn(2, 8, 4) * 50, voice_mask)})
    torch.testing.assert_close(logits[1], other[1])


@pytest.mark.parametrize("name", SEQUENCE_FUSIONS)
def test_sequence_fusion_shapes_masks_and_gradients(name):
    torch.manual_seed(0)
    module = fusion(name, dropout=0.0)
    visual = torch.randn(3, 9, 5, requires_grad=True)
    audio = torch.randn(3, 20, 7, requires_grad=True)
    visual_mask = torch.ones(3, 9, dtype=torch.bool)
    visual_mask[1, 4:] = False
    audio_mask = torch.ones(3, 20, dtype=torch.bool)
    audio_mask[2, 12:] = False
    out = module([(visual, visual_mask), (audio, audio_mask)])
    assert out.shape == (3, module.out_dim) and torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert visual.grad.abs().sum() > 0 and audio.grad.abs().sum() > 0
    # Masked steps get no gradient: they cannot influence the output.
    assert visual.grad[1, 4:].abs().max() == 0 and audio.grad[2, 12:].abs().max() == 0
    steps, step_mask = module.fuse_steps([(visual, visual_mask), (audio, audio_mask)])
    assert steps.shape[:2] == (3, 9) and torch.equal(step_mask, visual_mask)


def test_leader_follower_reads_followers_through_attention_over_the_leader_steps():
    torch.manual_seed(0)
    module = fusion("leader_follower", dims=(5, 7), dim=8, heads=2, dropout=0.0).eval()
    leader = (torch.randn(1, 6, 5), torch.ones(1, 6, dtype=torch.bool))
    follower = (torch.randn(1, 10, 7), torch.ones(1, 10, dtype=torch.bool))
    steps, _ = module.fuse_steps([leader, follower])
    # The first `dim` channels are the projected leader itself, step by step.
    torch.testing.assert_close(steps[..., :8], module.project[0](leader[0]))
    # Permuting the follower's steps changes nothing: attention reads it as a set.
    shuffled = (follower[0][:, torch.randperm(10)], follower[1])
    torch.testing.assert_close(module.fuse_steps([leader, shuffled])[0], steps, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head", ["attention", "blstm", "tcn", "stats"])
@pytest.mark.parametrize("name", SEQUENCE_FUSIONS)
def test_sequence_fusion_runs_on_every_head_with_a_missing_modality(name, head):
    torch.manual_seed(0)
    specs = [BranchSpec("face", 6, head, HEADS.get(head).Config()), BranchSpec("voice", 4, "tcn", HEADS.get("tcn").Config())]
    model = MultiBranchModel(specs, 3, name, FUSIONS.get(name).Config()).eval()
    face = (torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    voice_mask = torch.tensor([[True] * 8, [False] * 8])
    logits = model({"face": face, "voice": (torch.randn(2, 8, 4), voice_mask)})
    other = model({"face": face, "voice": (torch.randn(2, 8, 4) * 50, voice_mask)})
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[1], other[1])
