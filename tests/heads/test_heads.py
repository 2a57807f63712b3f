import pytest
import torch

from pipeline.heads import HEADS, capabilities
from pipeline.layers import masked_mean_std


# Heads on raw inputs of a fixed shape (the fine-tuned CNN on 64x64 pixels) have their own
# tests in test_finetune.py; the non-neural pooled heads theirs in test_pooled.py.
GENERIC_HEADS = [n for n in HEADS.names() if capabilities(n).neural and not capabilities(n).raw_input]


def build(name, input_dim=6, **options):
    cls = HEADS.get(name)
    return cls(input_dim, cls.Config(**options))


@pytest.mark.parametrize("name", GENERIC_HEADS)
def test_head_shapes_and_gradients(name):
    torch.manual_seed(0)
    head = build(name)
    x = torch.randn(3, 11, 6, requires_grad=True)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[1, 7:] = False
    out = head(x, mask)
    assert out.shape == (3, head.embed_dim)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", GENERIC_HEADS)
def test_masked_frames_do_not_change_the_embedding(name):
    torch.manual_seed(0)
    head = build(name).eval()
    x = torch.randn(1, 9, 6)
    mask = torch.ones(1, 9, dtype=torch.bool)
    mask[0, [2, 5, 8]] = False
    noisy = x.clone()
    noisy[0, [2, 5, 8]] = 100.0  # garbage where there is no face
    if name in ("tcn", "vgg_blstm"):
        # Convolutions see neighbours, so compare against zeroed (not removed) masked frames.
        clean = x.clone()
        clean[0, [2, 5, 8]] = 0.0
        torch.testing.assert_close(head(noisy, mask), head(clean, mask))
    else:
        compact = x[:, mask[0]]
        torch.testing.assert_close(head(noisy, mask), head(compact, torch.ones(1, 6, dtype=torch.bool)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", GENERIC_HEADS)
def test_a_clip_encodes_the_same_alone_and_padded_beside_a_longer_one(name):
    # What a clip scores must not depend on the clips it is batched with.
    torch.manual_seed(0)
    head = build(name).eval()
    short, long = torch.randn(1, 70, 6), torch.randn(1, 200, 6)
    batch = torch.zeros(2, 200, 6)
    batch[0, :70], batch[1] = short[0], long[0]
    mask = torch.zeros(2, 200, dtype=torch.bool)
    mask[0, :70], mask[1] = True, True
    with torch.no_grad():
        torch.testing.assert_close(head(batch, mask)[0], head(short, torch.ones(1, 70, dtype=torch.bool))[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", GENERIC_HEADS)
def test_all_masked_clip_is_finite(name):
    head = build(name).eval()
    out = head(torch.randn(2, 5, 6), torch.tensor([[False] * 5, [True] * 5]))
    assert torch.isfinite(out).all()


def test_masked_mean_std_against_manual():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    mean, std = masked_mean_std(x, torch.tensor([[True, True, False]]))
    assert mean.item() == pytest.approx(2.0)
    assert std.item() == pytest.approx(1.0, abs=1e-3)


def test_tcn_receptive_field_follows_config():
    head = build("tcn", input_dim=1, channels=4, levels=3, kernel_size=3, dropout=0.0).eval()
    with torch.no_grad():  # positive weights keep every ReLU open, so gradients show the reach
        for parameter in head.parameters():
            parameter.fill_(0.1)
    length, centre = 61, 30
    x = torch.ones(1, length, 1, requires_grad=True)
    features = head.blocks(head.input(x.transpose(1, 2)))
    features[0, :, centre].sum().backward()
    reach = (x.grad[0, :, 0] != 0).nonzero().flatten()
    expected = 1 + 2 * (3 - 1) * (2**3 - 1)
    assert reach.max() - reach.min() + 1 == expected


def test_masked_average_pool_ignores_masked_frames():
    from pipeline.layers import masked_average_pool

    x = torch.tensor([[[1.0], [3.0], [50.0], [5.0], [7.0]]])
    mask = torch.tensor([[True, True, False, True, False]])
    pooled, pooled_mask = masked_average_pool(x, mask, 2)
    assert pooled.flatten().tolist() == [2.0, 5.0, 0.0]
    assert pooled_mask.tolist() == [[True, True, False]]


def test_spectrogram_segments_overlap_and_follow_the_mask():
    from pipeline.heads.spectrogram_cnn import segment_frames

    x = torch.arange(10, dtype=torch.float32).view(1, 10, 1).expand(1, 10, 2)
    mask = torch.tensor([[True] * 6 + [False] * 4])
    segments, visible = segment_frames(x, mask, length=4, hop=2)
    assert segments.shape == (1, 4, 4, 2)  # starts 0, 2, 4, 6
    assert segments[0, 1, :, 0].tolist() == [2, 3, 4, 5]
    assert visible.tolist() == [[True, True, True, False]]  # the last segment is all padding frames
    short, short_visible = segment_frames(x[:, :3], mask[:, :3], length=4, hop=2)
    assert short.shape == (1, 1, 4, 2) and short_visible.tolist() == [[True]]
