"""Tests for the periodic 3D U-Net denoiser (tiny nets on CPU)."""

from __future__ import annotations

import itertools
import json
import re

import pytest
import torch
from torch import nn

from gcd_core.errors import GCDError
from gcd_core.nn.unet import UNet3D

TINY = {"in_channels": 3, "out_channels": 2, "base_channels": 8, "channel_mults": (1, 2, 2)}
COND = {**TINY, "num_classes": 5, "vector_dim": 7, "num_scalars": 2}


def _net(seed: int = 0, **kwargs) -> UNet3D:
    torch.manual_seed(seed)
    return UNet3D(**{**TINY, **kwargs}).eval()


def _cond_inputs(batch: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "label": torch.randint(0, 5, (batch,), generator=g),
        "vector": torch.randn(batch, 7, generator=g),
        "scalars": torch.randn(batch, 2, generator=g),
    }


@pytest.mark.parametrize("shape", [(8, 8, 8), (16, 16, 16), (8, 16, 8), (4, 12, 8), (32, 32, 32)])
def test_output_shape(shape: tuple[int, int, int]) -> None:
    net = _net()
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        out = net(x, torch.rand(2))
    assert out.shape == (2, 2, *shape)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_time_forms_broadcast() -> None:
    net = _net()
    x = torch.randn(3, 3, 8, 8, 8)
    with torch.no_grad():
        ref = net(x, torch.full((3,), 0.3))
        assert torch.allclose(net(x, 0.3), ref, atol=1e-6)
        assert torch.allclose(net(x, torch.tensor(0.3)), ref, atol=1e-6)
        assert not torch.allclose(net(x, 0.7), ref, atol=1e-4)


def test_only_circular_padding() -> None:
    """No conv may pad with zeros: each one either wraps around or does not pad at all."""
    net = UNet3D(**COND)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert convs
    for conv in convs:
        assert conv.padding_mode == "circular" or all(p == 0 for p in conv.padding), conv


def test_stride() -> None:
    assert UNet3D(1, 1, channel_mults=(1,)).stride == 1
    assert UNet3D(1, 1, base_channels=8, channel_mults=[1, 2, 2]).stride == 4
    assert UNet3D(1, 1, base_channels=8, channel_mults=(1, 1, 2, 2)).stride == 8


SHIFTS = [(4, 0, 0), (0, 8, 0), (0, 0, 12), (4, 8, 12), (12, 4, 8), (8, 8, 8)]


@pytest.mark.parametrize("shift", SHIFTS)
def test_periodic_equivariance(shift: tuple[int, int, int]) -> None:
    """Rolling the input by a multiple of the stride rolls the output by exactly the same amount."""
    net = _net(seed=3, **{k: v for k, v in COND.items() if k not in TINY}, dropout=0.0)
    assert net.stride == 4
    torch.manual_seed(4)
    x = torch.randn(2, 3, 16, 16, 16)
    cond = _cond_inputs(2)
    t = torch.tensor([0.2, 0.8])
    with torch.no_grad():
        out = net(x, t, **cond)
        out_shifted = net(torch.roll(x, shift, dims=(2, 3, 4)), t, **cond)
    expected = torch.roll(out, shift, dims=(2, 3, 4))
    # Guard against a vacuous pass: the output must actually vary in space, so the roll matters.
    assert (expected - out).abs().max() > 1e-2
    torch.testing.assert_close(out_shifted, expected, atol=1e-5, rtol=1e-5)


def test_equivariance_non_cubic_and_deeper() -> None:
    net = _net(seed=5, channel_mults=(1, 1, 2, 2))
    assert net.stride == 8
    x = torch.randn(1, 3, 8, 16, 24)
    shift = (0, 8, 16)
    with torch.no_grad():
        out = net(x, 0.5)
        out_shifted = net(torch.roll(x, shift, dims=(2, 3, 4)), 0.5)
    torch.testing.assert_close(out_shifted, torch.roll(out, shift, dims=(2, 3, 4)), atol=1e-5, rtol=1e-5)


def test_conditioning_changes_output() -> None:
    net = _net(seed=6, **{k: v for k, v in COND.items() if k not in TINY})
    x = torch.randn(2, 3, 8, 8, 8)
    cond = _cond_inputs(2)
    with torch.no_grad():
        ref = net(x, 0.5, **cond)
        changed = {
            "label": (cond["label"] + 1) % 5,
            "vector": cond["vector"] + 1.0,
            "scalars": cond["scalars"] - 1.0,
        }
        for key, value in changed.items():
            out = net(x, 0.5, **{**cond, key: value})
            assert (out - ref).abs().amax(dim=(1, 2, 3, 4)).min() > 1e-4, key
            # Leaving a kind out (null embedding) changes the output too.
            out_null = net(x, 0.5, **{**cond, key: None})
            assert (out_null - ref).abs().max() > 1e-4, key


def test_drop_rows_use_null_embedding() -> None:
    net = _net(seed=7, **{k: v for k, v in COND.items() if k not in TINY})
    x = torch.randn(4, 3, 8, 8, 8)
    t = torch.rand(4)
    cond = _cond_inputs(4)
    drop = torch.tensor([True, False, True, False])
    with torch.no_grad():
        out = net(x, t, **cond, drop=drop)
        uncond = net(x, t)
        full = net(x, t, **cond)
        only_label_null = net(x, t, vector=cond["vector"], scalars=cond["scalars"])
    torch.testing.assert_close(out[drop], uncond[drop], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out[~drop], full[~drop], atol=1e-6, rtol=1e-6)
    # label=None alone nulls only the label: differs from full dropping.
    assert (only_label_null - uncond).abs().max() > 1e-4


def test_drop_with_label_only_net_matches_label_none() -> None:
    net = _net(seed=8, num_classes=3)
    x = torch.randn(2, 3, 8, 8, 8)
    label = torch.tensor([0, 2])
    with torch.no_grad():
        dropped = net(x, 0.4, label=label, drop=torch.tensor([True, True]))
        null = net(x, 0.4, label=None)
    torch.testing.assert_close(dropped, null, atol=1e-6, rtol=1e-6)


def test_unsupported_conditioning_raises() -> None:
    net = _net()
    x = torch.randn(1, 3, 8, 8, 8)
    with pytest.raises(ValueError, match="num_classes=0"):
        net(x, 0.5, label=torch.tensor([1]))
    with pytest.raises(ValueError, match="vector_dim=0"):
        net(x, 0.5, vector=torch.randn(1, 4))
    with pytest.raises(ValueError, match="num_scalars=0"):
        net(x, 0.5, scalars=torch.randn(1, 2))


def test_bad_conditioning_values_raise() -> None:
    net = _net(**{k: v for k, v in COND.items() if k not in TINY})
    x = torch.randn(2, 3, 8, 8, 8)
    with pytest.raises(ValueError, match="label values"):
        net(x, 0.5, label=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match="label must be an integer"):
        net(x, 0.5, label=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"vector must have shape \[2, 7\]"):
        net(x, 0.5, vector=torch.randn(2, 6))
    with pytest.raises(ValueError, match="drop must have one entry"):
        net(x, 0.5, drop=torch.tensor([True]))
    with pytest.raises(ValueError, match="t must"):
        net(x, torch.rand(3))


@pytest.mark.parametrize("shape", [(8, 8, 6), (10, 8, 8), (8, 2, 8)])
def test_wrong_spatial_size_raises(shape: tuple[int, int, int]) -> None:
    net = _net()
    with pytest.raises(ValueError, match=re.escape(str(shape)) + ".*multiple of 4"):
        net(torch.randn(1, 3, *shape), 0.5)


def test_wrong_channels_or_rank_raises() -> None:
    net = _net()
    with pytest.raises(ValueError, match="input channels"):
        net(torch.randn(1, 4, 8, 8, 8), 0.5)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(3, 8, 8, 8), 0.5)


def test_bad_constructor_args_raise() -> None:
    with pytest.raises(ValueError):
        UNet3D(0, 1)
    with pytest.raises(ValueError):
        UNet3D(1, 1, channel_mults=[])
    with pytest.raises(ValueError):
        UNet3D(1, 1, dropout=1.5)


def test_config_round_trip() -> None:
    net = UNet3D(**{**COND, "num_res_blocks": 2, "dropout": 0.1, "groups": 4})
    config = net.config
    restored_config = json.loads(json.dumps(config))
    assert restored_config == config
    assert isinstance(config["channel_mults"], list)
    rebuilt = UNet3D(**restored_config)
    a, b = net.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    rebuilt.load_state_dict(a)
    net.eval()
    rebuilt.eval()
    x = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x, 0.5), rebuilt(x, 0.5))
    # Mutating the returned dict must not change the net.
    config["channel_mults"].append(4)
    assert net.config["channel_mults"] == [1, 2, 2]


def test_default_parameter_count() -> None:
    n_params = sum(p.numel() for p in UNet3D(4, 4).parameters())
    assert 1_000_000 <= n_params <= 3_000_000


@pytest.mark.parametrize("drop", [torch.tensor([True, False, False, True]), None])
def test_all_parameters_get_gradients(drop: torch.Tensor | None) -> None:
    """Every parameter takes part in one backward pass (DDP without find_unused_parameters)."""
    net = UNet3D(**{**COND, "num_res_blocks": 2, "dropout": 0.1}).train()
    x = torch.randn(4, 3, 8, 8, 8)
    out = net(x, torch.rand(4), **_cond_inputs(4), drop=drop)
    out.square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    # With a mixed mask the null embeddings receive a real (non-zero) gradient.
    if drop is not None:
        assert net.null_vector.grad.abs().sum() > 0
        assert net.null_scalars.grad.abs().sum() > 0
        assert net.label_emb.weight.grad[-1].abs().sum() > 0


def test_batch_rows_independent() -> None:
    """GroupNorm statistics are per sample, so one row's output does not depend on the others."""
    net = _net(seed=9)
    x = torch.randn(3, 3, 8, 8, 8)
    t = torch.rand(3)
    with torch.no_grad():
        full = net(x, t)
        single = net(x[1:2], t[1:2])
    torch.testing.assert_close(full[1:2], single, atol=1e-5, rtol=1e-5)


def test_larger_grid_than_trained_runs_after_training_step() -> None:
    net = _net(seed=10).train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 8, 8, 8)
    loss = (net(x, torch.rand(2)) - x[:, :2]).square().mean()
    loss.backward()
    opt.step()
    net.eval()
    with torch.no_grad():
        for shape in itertools.islice(itertools.permutations((8, 16, 24)), 2):
            out = net(torch.randn(1, 3, *shape), 0.1)
            assert out.shape == (1, 2, *shape)


# ------------------------------------------------------------------------------------- self-conditioning
def test_self_conditioned_net_reads_its_estimate_and_round_trips_its_config() -> None:
    net = _net(self_condition=True)
    assert net.config["self_condition"] is True and "self_condition" not in _net().config
    assert UNet3D(**net.config).conv_in.in_channels == 2 * TINY["in_channels"]
    x, t = torch.randn(2, 3, 8, 8, 8), torch.rand(2)
    with torch.no_grad():
        without = net(x, t)
        zeros = net(x, t, estimate=torch.zeros_like(x))
        other = net(x, t, estimate=torch.randn_like(x))
    torch.testing.assert_close(without, zeros)  # no estimate yet reads as zeros
    assert not torch.allclose(without, other)


def test_self_conditioned_net_started_from_a_plain_one_computes_the_same_until_trained() -> None:
    plain = _net(seed=3)
    grown = _net(seed=4, self_condition=True)
    grown.load_weights_from(plain)
    x, t = torch.randn(2, 3, 8, 8, 8), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(grown(x, t, estimate=torch.randn_like(x)), plain(x, t))
    torch.testing.assert_close(grown.conv_in.weight[:, :3], plain.conv_in.weight)
    assert not grown.conv_in.weight[:, 3:].any()


def test_self_condition_errors() -> None:
    x, t = torch.randn(1, 3, 8, 8, 8), torch.rand(1)
    with pytest.raises(GCDError, match="without self_condition"):
        _net()(x, t, estimate=torch.zeros_like(x))
    with pytest.raises(GCDError, match="estimate has shape"):
        _net(self_condition=True)(x, t, estimate=torch.zeros(1, 3, 8, 8, 4))
    with pytest.raises(GCDError, match="cannot start a network"):
        _net().load_weights_from(_net(self_condition=True))  # the estimate's weights would be lost
    with pytest.raises(GCDError, match="cannot start a network"):
        _net(self_condition=True).load_weights_from(_net(base_channels=16))
