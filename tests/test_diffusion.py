"""Tests for noise schedules, the training objective, samplers, in-painting and guidance."""

from __future__ import annotations

import json

import pytest
import torch

from gcd_core.diffusion import (
    PREDICTIONS,
    SAMPLERS,
    CosineSchedule,
    Denoiser,
    Inpaint,
    LinearSchedule,
    ddim,
    ddpm,
    diffusion_loss,
    run_to_end,
    schedule_from_config,
    training_target,
    x0_from_output,
)
from gcd_core.errors import GCDError

SCHEDULE_CASES = [(CosineSchedule(), 1e-3), (LinearSchedule(), 1e-2)]
SHAPE = (2, 3, 6, 5, 4)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: a second OpenMP thread only adds synchronisation (badly so on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clean(seed: int = 0, shape=SHAPE, dtype=torch.float32) -> torch.Tensor:
    """A clean model-space grid in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1).to(dtype)


def _noise(seed: int = 1, shape=SHAPE, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------------- schedules
@pytest.mark.parametrize(("schedule", "end"), SCHEDULE_CASES, ids=["cosine", "linear"])
def test_schedule_shape(schedule, end):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    alpha_bar = schedule.alpha_bar(t)
    assert float(alpha_bar[0]) == pytest.approx(1.0, abs=1e-9)
    assert torch.all(alpha_bar[1:] < alpha_bar[:-1]), "alpha_bar must decrease strictly"
    assert float(alpha_bar[-1]) < end
    assert torch.all(alpha_bar > 0) and torch.all(alpha_bar <= 1)
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-12, rtol=0)
    assert torch.all(alpha >= 0) and torch.all(sigma >= 0)
    # a python float or a float32 tensor works too
    assert float(schedule.alpha_bar(0.5)) == pytest.approx(float(schedule.alpha_bar(torch.tensor(0.5))))


@pytest.mark.parametrize(("schedule", "end"), SCHEDULE_CASES, ids=["cosine", "linear"])
def test_add_noise_is_alpha_x0_plus_sigma_eps(schedule, end):
    x0, noise = _clean(dtype=torch.float64), _noise(dtype=torch.float64)
    t = torch.tensor([0.1, 0.8], dtype=torch.float64)
    x_t = schedule.add_noise(x0, t, noise)
    for b in range(2):
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(t[b]))
        torch.testing.assert_close(x_t[b], alpha * x0[b] + sigma * noise[b])


@pytest.mark.parametrize(
    "schedule",
    [CosineSchedule(), CosineSchedule(offset=0.02), LinearSchedule(), LinearSchedule(1e-4, 0.03, 500)],
)
def test_schedule_config_round_trip(schedule):
    config = schedule.to_config()
    assert config["name"] == schedule.name
    rebuilt = schedule_from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(schedule) and rebuilt == schedule
    t = torch.linspace(0, 1, 11)
    torch.testing.assert_close(rebuilt.alpha_bar(t), schedule.alpha_bar(t))
    assert config == schedule.to_config(), "schedule_from_config must not change its input"
    assert schedule_from_config(schedule.name) == type(schedule)()


def test_schedule_config_errors():
    with pytest.raises(GCDError, match="unknown noise schedule"):
        schedule_from_config("sigmoid")
    with pytest.raises(GCDError, match="unknown noise schedule"):
        schedule_from_config({"offset": 0.008})
    with pytest.raises(GCDError, match="cosine"):
        schedule_from_config({"name": "cosine", "beta_start": 1e-4})


def test_timesteps():
    times = CosineSchedule().timesteps(4)
    torch.testing.assert_close(times, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    with pytest.raises(GCDError, match="at least one step"):
        CosineSchedule().timesteps(0)


# ------------------------------------------------------------------------------------------------- objective
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("schedule", [CosineSchedule(), LinearSchedule()], ids=["cosine", "linear"])
def test_x0_from_output_inverts_training_target(prediction, dtype, schedule):
    x0, noise = _clean(2, dtype=dtype), _noise(3, dtype=dtype)
    for t_value in (0.05, 0.3, 0.6, 0.95):
        t = torch.full((SHAPE[0],), t_value, dtype=dtype)
        x_t = schedule.add_noise(x0, t, noise).to(dtype)
        target = training_target(x0, noise, t, schedule, prediction)
        assert target.shape == x0.shape
        recovered = x0_from_output(target, x_t, t, schedule, prediction)
        assert recovered.dtype == dtype
        # float32 x_t carries ~1e-7 relative rounding, which eps prediction divides by alpha (0.01 for the
        # linear schedule at t = 0.95): allow for that, and no more
        alpha = float(schedule.alpha_sigma(torch.tensor(t_value))[0])
        atol = 1e-5 if dtype == torch.float64 else 1e-5 * max(1.0, 0.05 / alpha)
        torch.testing.assert_close(recovered, x0, atol=atol, rtol=0)
        if dtype == torch.float64:
            torch.testing.assert_close(recovered, x0, atol=1e-10, rtol=0)


def test_targets_are_what_they_say():
    schedule = CosineSchedule()
    x0, noise = _clean(dtype=torch.float64), _noise(dtype=torch.float64)
    t = torch.tensor([0.2, 0.7], dtype=torch.float64)
    assert torch.equal(training_target(x0, noise, t, schedule, "x0"), x0)
    assert torch.equal(training_target(x0, noise, t, schedule, "eps"), noise)
    alpha, sigma = (v.view(-1, 1, 1, 1, 1) for v in schedule.alpha_sigma(t))
    torch.testing.assert_close(training_target(x0, noise, t, schedule, "v"), alpha * noise - sigma * x0)
    with pytest.raises(GCDError, match="prediction"):
        training_target(x0, noise, t, schedule, "score")
    with pytest.raises(GCDError, match="prediction"):
        x0_from_output(x0, x0, t, schedule, "score")


def _oracle_net(x0: torch.Tensor, schedule, prediction: str):
    """A network that knows the clean batch: it recovers the noise from ``x_t`` and ``t``, answers exactly."""

    def net(x_t, t, **kwargs):
        alpha, sigma = (v.view(-1, 1, 1, 1, 1).to(x_t.dtype) for v in schedule.alpha_sigma(t.double()))
        noise = (x_t - alpha * x0) / sigma
        return training_target(x0, noise, t.double(), schedule, prediction)

    return net


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_diffusion_loss_of_an_oracle_is_zero(prediction):
    schedule = CosineSchedule()
    x0 = _clean(4, dtype=torch.float64)
    weights = torch.rand(SHAPE, generator=_gen(5), dtype=torch.float64) + 0.5
    loss = diffusion_loss(
        _oracle_net(x0, schedule, prediction), x0, weights, schedule, prediction, generator=_gen(6)
    )
    assert loss.dim() == 0
    if prediction == "x0":
        assert float(loss) == 0.0
    else:
        assert float(loss) < 1e-12


def test_diffusion_loss_of_an_oracle_is_zero_in_float32():
    schedule = LinearSchedule()
    x0 = _clean(4)

    def oracle(x_t, t, **kwargs):
        return x0

    assert float(diffusion_loss(oracle, x0, torch.ones_like(x0), schedule, "x0", generator=_gen(1))) == 0.0


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_diffusion_loss_of_a_zero_net_is_positive(prediction):
    schedule = CosineSchedule()
    x0 = _clean(7)
    loss = diffusion_loss(
        lambda x, t, **k: torch.zeros_like(x), x0, torch.ones_like(x0), schedule, prediction
    )
    assert float(loss) > 0.01


def test_diffusion_loss_is_the_weighted_mean_square():
    x0 = _clean(8)
    weights = torch.rand(SHAPE, generator=_gen(9))
    loss = diffusion_loss(lambda x, t: torch.zeros_like(x), x0, weights, CosineSchedule(), "x0")
    expected = (weights * x0**2).sum() / weights.sum()
    torch.testing.assert_close(loss, expected)


def test_diffusion_loss_zero_weights_exclude_elements():
    schedule = CosineSchedule()
    x0 = _clean(10)
    weights = torch.ones_like(x0)
    weights[:, 1:] = 0  # only channel 0 counts
    weights[1, 0, :2] = 0

    def half_right(x_t, t):
        wrong = x0 + 5.0
        return torch.where(weights > 0, x0, wrong)

    assert float(diffusion_loss(half_right, x0, weights, schedule, "x0")) == 0.0
    assert float(diffusion_loss(half_right, x0, torch.ones_like(x0), schedule, "x0")) > 1.0


def test_diffusion_loss_is_reproducible_and_passes_conditioning():
    schedule = CosineSchedule()
    x0 = _clean(11)
    seen: list[dict] = []

    def net(x_t, t, label=None, drop=None):
        seen.append({"t": t.clone(), "label": label, "drop": drop})
        assert t.shape == (SHAPE[0],) and t.dtype == x0.dtype
        assert torch.all((t >= 1e-3) & (t <= 1))
        return torch.tanh(x_t)

    label = torch.tensor([1, 3])
    kwargs = {"conditioning": {"label": label}, "prediction": "eps"}
    first = diffusion_loss(net, x0, torch.ones_like(x0), schedule, generator=_gen(12), **kwargs)
    second = diffusion_loss(net, x0, torch.ones_like(x0), schedule, generator=_gen(12), **kwargs)
    third = diffusion_loss(net, x0, torch.ones_like(x0), schedule, generator=_gen(13), **kwargs)
    assert torch.equal(first, second) and not torch.equal(first, third)
    assert all(torch.equal(s["label"], label) for s in seen) and all(s["drop"] is None for s in seen)

    seen.clear()
    diffusion_loss(net, x0, torch.ones_like(x0), schedule, drop_probability=1.0, **kwargs)
    assert seen[0]["drop"].dtype == torch.bool and bool(seen[0]["drop"].all())
    seen.clear()
    diffusion_loss(net, x0, torch.ones_like(x0), schedule, drop_probability=1e-9, **kwargs)
    assert not bool(seen[0]["drop"].any())


# ------------------------------------------------------------------------------------------------- samplers
def _sampler_cases():
    return [
        ("ddim", lambda d, x, s, **k: ddim(d, x, s, eta=0.0, **k)),
        ("ddim_eta", lambda d, x, s, **k: ddim(d, x, s, eta=0.7, **k)),
        ("ddpm", lambda d, x, s, **k: ddpm(d, x, s, **k)),
    ]


SAMPLER_CASES = _sampler_cases()
SAMPLER_IDS = [c[0] for c in SAMPLER_CASES]


def test_sampler_registry():
    assert SAMPLERS["ddim"] is ddim and SAMPLERS["ddpm"] is ddpm


@pytest.mark.parametrize(("name", "sampler"), SAMPLER_CASES, ids=SAMPLER_IDS)
@pytest.mark.parametrize("schedule", [CosineSchedule(), LinearSchedule()], ids=["cosine", "linear"])
def test_oracle_sampler_ends_exactly_at_the_clean_grid(name, sampler, schedule):
    clean = _clean(20)
    x = _noise(21)
    steps = 12
    calls = []

    def oracle(x_t, t):
        calls.append(float(t[0]))
        assert t.shape == (SHAPE[0],)
        return clean

    frames = list(sampler(oracle, x, schedule, steps=steps, generator=_gen(22)))
    assert len(frames) == steps == len(calls)
    assert [f.step for f in frames] == list(range(1, steps + 1))
    assert all(f.num_steps == steps for f in frames)
    assert [f.done for f in frames] == [False] * (steps - 1) + [True]
    times = [f.t for f in frames]
    assert all(a > b for a, b in zip(times, times[1:], strict=False)) and times[-1] == 0.0
    assert calls[0] == 1.0 and all(a > b for a, b in zip(calls, calls[1:], strict=False))
    for f in frames:
        assert f.x.shape == x.shape and f.x0.shape == x.shape
    assert torch.equal(frames[-1].x0, clean)
    assert torch.equal(frames[-1].x, clean)
    assert torch.equal(run_to_end(iter(frames)), clean)


@pytest.mark.parametrize("schedule", [CosineSchedule(), LinearSchedule()], ids=["cosine", "linear"])
def test_deterministic_ddim_follows_the_noise_of_its_start(schedule):
    """With the exact x0 and eta = 0 every frame is alpha_s x0 + sigma_s eps for the starting noise eps."""
    clean = _clean(23, dtype=torch.float64)
    x = _noise(24, dtype=torch.float64)
    alpha_1, sigma_1 = (float(v) for v in schedule.alpha_sigma(torch.tensor(1.0)))
    eps = (x - alpha_1 * clean) / sigma_1
    for frame in ddim(lambda x_t, t: clean, x, schedule, steps=8):
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(frame.t)))
        torch.testing.assert_close(frame.x, alpha * clean + sigma * eps, atol=1e-6, rtol=1e-6)


def test_ddpm_with_an_oracle_has_the_right_marginals():
    """Ancestral sampling from the exact x0 leaves x_s ~ N(alpha_s x0, sigma_s^2) at every step."""
    schedule = CosineSchedule()
    shape = (8, 1, 16, 16, 16)
    clean = _clean(25, shape=shape, dtype=torch.float64)
    x = _noise(26, shape=shape, dtype=torch.float64)
    for frame in ddpm(lambda x_t, t: clean, x, schedule, steps=10, generator=_gen(27)):
        if frame.t == 0:
            continue
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(frame.t)))
        residual = (frame.x - alpha * clean) / sigma
        assert abs(float(residual.mean())) < 0.03, frame.t
        assert float(residual.std()) == pytest.approx(1.0, abs=0.03), frame.t


def _tanh_denoiser(x_t, t):
    return torch.tanh(x_t)


def test_ddpm_same_seed_same_frames_other_seed_other_result():
    schedule = CosineSchedule()
    x = _noise(30)
    first = list(ddpm(_tanh_denoiser, x, schedule, steps=15, generator=_gen(31)))
    second = list(ddpm(_tanh_denoiser, x, schedule, steps=15, generator=_gen(31)))
    other = list(ddpm(_tanh_denoiser, x, schedule, steps=15, generator=_gen(32)))
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.x0, b.x0) and a.t == b.t
    assert not torch.equal(first[-1].x0, other[-1].x0)
    assert not torch.equal(first[5].x, other[5].x)


def test_deterministic_ddim_ignores_the_generator():
    schedule = LinearSchedule()
    x = _noise(33)
    a = run_to_end(ddim(_tanh_denoiser, x, schedule, steps=10, generator=_gen(1)))
    b = run_to_end(ddim(_tanh_denoiser, x, schedule, steps=10, generator=_gen(2)))
    assert torch.equal(a, b)
    c = run_to_end(ddim(_tanh_denoiser, x, schedule, steps=10, eta=1.0, generator=_gen(1)))
    d = run_to_end(ddim(_tanh_denoiser, x, schedule, steps=10, eta=1.0, generator=_gen(2)))
    assert not torch.equal(c, d)


def test_sampler_errors():
    with pytest.raises(GCDError, match="no frames"):
        run_to_end(iter([]))
    with pytest.raises(GCDError, match="at least one step"):
        next(ddim(_tanh_denoiser, _noise(), CosineSchedule(), steps=0))
    for start in (0.0, 1.5):
        with pytest.raises(GCDError, match="start_time"):
            next(ddpm(_tanh_denoiser, _noise(), CosineSchedule(), steps=4, start_time=start))


@pytest.mark.parametrize(("name", "sampler"), SAMPLER_CASES, ids=SAMPLER_IDS)
def test_a_sampler_started_part_way_runs_from_that_time_to_the_clean_grid(name, sampler):
    clean = _clean(35)
    calls: list[float] = []

    def oracle(x_t, t):
        calls.append(float(t[0]))
        return clean

    schedule = CosineSchedule()
    x = schedule.add_noise(clean, torch.full((SHAPE[0],), 0.4, dtype=torch.float64), _noise(36))
    frames = list(sampler(oracle, x.float(), schedule, steps=4, generator=_gen(37), start_time=0.4))
    assert calls == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert [f.t for f in frames] == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert torch.equal(frames[-1].x0, clean)


def test_single_step_sampler():
    clean = _clean(34)
    frames = list(ddpm(lambda x, t: clean, _noise(35), CosineSchedule(), steps=1, generator=_gen(0)))
    assert len(frames) == 1 and frames[0].done and frames[0].t == 0.0
    assert torch.equal(frames[0].x, clean)


# ----------------------------------------------------------------------------------------------- in-painting
def _known_and_mask(seed: int = 40):
    known = _clean(seed)
    mask = torch.rand(SHAPE, generator=_gen(seed + 1)) < 0.35
    return known, mask


@pytest.mark.parametrize("resample", [1, 3])
@pytest.mark.parametrize(("name", "sampler"), SAMPLER_CASES, ids=SAMPLER_IDS)
def test_inpainting_holds_the_known_voxels(name, sampler, resample):
    known, mask = _known_and_mask()
    inpaint = Inpaint(known, mask)
    calls = []

    def denoiser(x_t, t):
        calls.append(1)
        return torch.tanh(x_t)  # ignores the known region entirely

    steps = 8
    frames = list(
        sampler(
            denoiser, _noise(42), CosineSchedule(), steps=steps, generator=_gen(43), inpaint=inpaint, resample=resample
        )
    )
    assert len(frames) == steps and len(calls) == steps * resample
    final = run_to_end(iter(frames))
    assert torch.equal(final[mask], known[mask])
    assert torch.equal(frames[-1].x[mask], known[mask])
    assert bool((final[~mask] != known[~mask]).all())
    for frame in frames:
        assert torch.equal(frame.x0[mask], known[mask])


@pytest.mark.parametrize("resample", [1, 3])
def test_inpainting_with_an_oracle_keeps_the_marginals(resample):
    """With the exact x0, in-painting (and RePaint's re-noising) leaves x_s ~ N(alpha_s x0, sigma_s^2)."""
    schedule = CosineSchedule()
    shape = (8, 1, 16, 16, 16)
    clean = _clean(60, shape=shape, dtype=torch.float64)
    mask = torch.rand(shape, generator=_gen(61)) < 0.5
    inpaint = Inpaint(clean, mask)
    x = _noise(62, shape=shape, dtype=torch.float64)
    frames = ddpm(lambda x_t, t: clean, x, schedule, steps=6, generator=_gen(63), inpaint=inpaint, resample=resample)
    for frame in frames:
        assert frame.x.dtype == torch.float64
        if frame.t == 0:
            assert torch.equal(frame.x, clean)
            continue
        alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(frame.t)))
        residual = (frame.x - alpha * clean) / sigma
        for region in (mask, ~mask):
            assert abs(float(residual[region].mean())) < 0.04, frame.t
            assert float(residual[region].std()) == pytest.approx(1.0, abs=0.04), frame.t


def test_inpainting_is_reproducible_with_resampling():
    known, mask = _known_and_mask(44)
    runs = [
        run_to_end(
            ddpm(
                _tanh_denoiser,
                _noise(45),
                LinearSchedule(),
                steps=6,
                generator=_gen(seed),
                inpaint=Inpaint(known, mask),
                resample=2,
            )
        )
        for seed in (46, 46, 47)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_inpainting_mask_may_be_float_and_resample_must_be_positive():
    known, mask = _known_and_mask(48)
    inpaint = Inpaint(known, mask.float())
    assert inpaint.mask.dtype == known.dtype
    final = run_to_end(ddim(_tanh_denoiser, _noise(49), CosineSchedule(), steps=4, inpaint=inpaint))
    assert torch.equal(final[mask], known[mask])
    for resample in (0, -2):
        with pytest.raises(GCDError, match="resample"):
            run_to_end(ddim(_tanh_denoiser, _noise(49), CosineSchedule(), steps=4, resample=resample))


# ------------------------------------------------------------------------------------------------- guidance
class _LabelNet:
    """Conditional output ``label + 1`` per sample, unconditional 0.5; records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, label=None, drop=None):
        self.calls.append({"batch": x.shape[0], "label": label, "drop": drop})
        if label is None:
            return x * 0 + 0.5
        value = (label + 1).to(x.dtype)
        if drop is not None:
            value = torch.where(drop, torch.full_like(value, 0.5), value)
        return x * 0 + value.view(-1, *([1] * (x.dim() - 1)))


@pytest.mark.parametrize(
    ("scale", "expected"), [(1.0, "c"), (0.0, "u"), (3.0, "mix"), (0.5, "mix"), (-1.0, "mix")]
)
def test_classifier_free_guidance(scale, expected):
    net = _LabelNet()
    labels = torch.tensor([0, 2])
    denoiser = Denoiser(
        net, CosineSchedule(), "x0", conditioning={"label": labels}, guidance_scale=scale, clip=False
    )
    x = _noise(50)
    out = denoiser(x, torch.full((2,), 0.5))
    c = (labels + 1).float().view(-1, 1, 1, 1, 1).expand_as(x)
    u = torch.full_like(x, 0.5)
    want = {"c": c, "u": u, "mix": u + scale * (c - u)}[expected]
    torch.testing.assert_close(out, want)
    assert len(net.calls) == 1, "one network call per step (a doubled batch when mixing)"
    if expected == "mix":
        assert net.calls[0]["batch"] == 4
        assert net.calls[0]["drop"].tolist() == [False, False, True, True]


def test_guidance_clips_and_drops_missing_conditioning():
    net = _LabelNet()
    denoiser = Denoiser(
        net, CosineSchedule(), "x0", conditioning={"label": torch.tensor([0, 2])}, guidance_scale=3
    )
    out = denoiser(_noise(51), torch.full((2,), 0.5))
    assert float(out.max()) == 1.0 and float(out.min()) >= -1.0  # u + 3 (c - u) > 1 is clipped
    net = _LabelNet()
    plain = Denoiser(net, CosineSchedule(), "x0", conditioning={"label": None}, guidance_scale=3, clip=False)
    torch.testing.assert_close(plain(_noise(52), torch.full((2,), 0.5)), torch.full(SHAPE, 0.5))
    assert net.calls[0]["label"] is None and net.calls[0]["drop"] is None


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_denoiser_converts_the_network_output_to_x0(prediction):
    schedule = CosineSchedule()
    x0, noise = _clean(53), _noise(54)
    t = torch.full((2,), 0.4)
    x_t = schedule.add_noise(x0, t, noise).float()
    target = training_target(x0, noise, t, schedule, prediction)
    denoiser = Denoiser(lambda x, t: target, schedule, prediction, clip=False)
    torch.testing.assert_close(denoiser(x_t, t), x0, atol=1e-5, rtol=0)


def test_gradient_guidance_moves_x0_toward_the_target():
    schedule = CosineSchedule()
    target = _clean(55)
    x = _noise(56)
    t = torch.full((2,), 0.5)

    def loss(x0):
        return ((x0 - target) ** 2).flatten(1).sum(1)

    plain = Denoiser(lambda x, t: torch.tanh(x), schedule, "x0", clip=False)
    guided = Denoiser(
        lambda x, t: torch.tanh(x), schedule, "x0", gradient_guidance=loss, gradient_scale=0.05, clip=False
    )
    before, after = plain(x, t), guided(x, t)
    assert not after.requires_grad
    assert float(loss(after).sum()) < float(loss(before).sum())
    # for an identity network the step is exactly x0 - scale * d loss / d x0
    identity = Denoiser(
        lambda x, t: x, schedule, "x0", gradient_guidance=loss, gradient_scale=0.1, clip=False
    )
    torch.testing.assert_close(identity(x, t), x - 0.1 * 2 * (x - target))
    # a zero scale is plain denoising
    off = Denoiser(
        lambda x, t: torch.tanh(x), schedule, "x0", gradient_guidance=loss, gradient_scale=0.0, clip=False
    )
    assert torch.equal(off(x, t), before)


def test_guided_sampling_reaches_the_target():
    """A whole sampler run with gradient guidance ends nearer the target than without."""
    schedule = CosineSchedule()
    target = _clean(57)

    def loss(x0):
        return ((x0 - target) ** 2).flatten(1).sum(1)

    def net(x, t):
        return torch.tanh(x)

    plain = run_to_end(ddim(Denoiser(net, schedule), _noise(58), schedule, steps=10))
    guided = run_to_end(
        ddim(
            Denoiser(net, schedule, gradient_guidance=loss, gradient_scale=0.2),
            _noise(58),
            schedule,
            steps=10,
        )
    )
    assert float(loss(guided).sum()) < 0.5 * float(loss(plain).sum())


def test_resampling_without_inpainting_is_a_corrector_that_still_ends_at_the_oracle():
    clean = _clean(70)
    calls = []

    def oracle(x_t, t):
        calls.append(1)
        return clean

    frames = list(ddpm(oracle, _noise(71), CosineSchedule(), steps=5, generator=_gen(72), resample=3))
    assert len(frames) == 5 and len(calls) == 15
    assert torch.equal(frames[-1].x0, clean)
    again = run_to_end(ddpm(_tanh_denoiser, _noise(71), CosineSchedule(), steps=5, generator=_gen(72), resample=3))
    assert torch.equal(again, run_to_end(ddpm(_tanh_denoiser, _noise(71), CosineSchedule(), steps=5,
                                              generator=_gen(72), resample=3)))



def test_resample_window_repeats_only_the_steps_inside_it():
    schedule = CosineSchedule()
    steps, starts = 8, []

    def recording(x_t, t):
        starts.append(float(t[0]))
        return torch.tanh(x_t)

    window = (0.2, 0.6)
    run_to_end(ddpm(recording, _noise(73), schedule, steps=steps, generator=_gen(74), resample=3,
                    resample_window=window))
    inside = [window[0] <= t <= window[1] for t in schedule.timesteps(steps).tolist()[:-1]]  # each step's start
    assert 0 < sum(inside) < steps
    assert len(starts) == 3 * sum(inside) + (steps - sum(inside))
    assert all(starts.count(t) == (3 if window[0] <= t <= window[1] else 1) for t in set(starts))
    # (0, 1) is plain resampling; a window holding no step's start repeats none: the same draws as resample = 1
    every = run_to_end(ddpm(_tanh_denoiser, _noise(73), schedule, steps=steps, generator=_gen(74), resample=3))
    assert torch.equal(every, run_to_end(ddpm(_tanh_denoiser, _noise(73), schedule, steps=steps,
                                              generator=_gen(74), resample=3, resample_window=(0.0, 1.0))))
    once = run_to_end(ddpm(_tanh_denoiser, _noise(73), schedule, steps=steps, generator=_gen(74)))
    assert torch.equal(once, run_to_end(ddpm(_tanh_denoiser, _noise(73), schedule, steps=steps,
                                             generator=_gen(74), resample=3, resample_window=(0.0, 0.0))))
    for bad in ((-0.1, 0.5), (0.0, 1.5), (0.6, 0.2)):
        with pytest.raises(GCDError, match="resample_window"):
            run_to_end(ddim(_tanh_denoiser, _noise(73), schedule, steps=4, resample_window=bad))

def test_diffusion_loss_draws_times_from_the_requested_range():
    x0 = _clean(14)
    times: list[torch.Tensor] = []

    def net(x_t, t):
        times.append(t.clone())
        return torch.zeros_like(x_t)

    for seed in range(20):
        diffusion_loss(
            net, x0, torch.ones_like(x0), CosineSchedule(), "x0", t_min=0.3, generator=_gen(seed), t_max=0.5
        )
    drawn = torch.cat(times)
    assert bool(((drawn >= 0.3) & (drawn <= 0.5)).all())
    assert float(drawn.max() - drawn.min()) > 0.1  # spread over the range, not pinned to one end
    for bad in ((0.5, 0.5), (0.6, 0.4), (-0.1, 0.5), (0.2, 1.5)):
        with pytest.raises(GCDError, match="training times"):
            diffusion_loss(net, x0, torch.ones_like(x0), CosineSchedule(), "x0", t_min=bad[0], t_max=bad[1])


class _EstimateNet:
    """Records the grid and the estimate of each call and returns ``x + 0.1``, so estimates are easy to trace."""

    def __init__(self):
        self.inputs, self.estimates = [], []

    def __call__(self, x, t, estimate=None, drop=None, label=None):
        self.inputs.append(x.clone())
        self.estimates.append(None if estimate is None else estimate.clone())
        return x + 0.1


def test_diffusion_loss_self_conditions_on_its_own_clipped_first_estimate():
    x0, schedule = _clean(70), CosineSchedule()
    net = _EstimateNet()
    diffusion_loss(net, x0, torch.ones_like(x0), schedule, "x0", generator=_gen(3), self_condition_probability=1.0)
    assert net.estimates[0] is None and len(net.estimates) == 2
    torch.testing.assert_close(net.inputs[1], net.inputs[0])
    torch.testing.assert_close(net.estimates[1], (net.inputs[0] + 0.1).clamp(-1, 1))
    net = _EstimateNet()
    diffusion_loss(net, x0, torch.ones_like(x0), schedule, "x0", generator=_gen(3), self_condition_probability=1e-9)
    assert net.estimates == [None], "a batch that skips self-conditioning is scored without an estimate"
    net = _EstimateNet()
    for seed in range(40):
        diffusion_loss(net, x0, torch.ones_like(x0), schedule, generator=_gen(seed), self_condition_probability=0.5)
    assert 50 < len(net.estimates) < 70  # 40 scored calls plus a first estimate in about half the batches


def test_self_conditioned_denoiser_passes_its_last_estimate_and_starts_afresh_on_a_new_run():
    net = _EstimateNet()
    denoiser = Denoiser(net, CosineSchedule(), "x0", self_condition=True)
    x = _noise(71)
    first = denoiser(x, torch.full((2,), 0.9))
    second = denoiser(x, torch.full((2,), 0.9))  # a resampled step at the same time keeps the estimate
    denoiser(x, torch.full((2,), 0.5))
    denoiser(x, torch.full((2,), 1.0))  # back up to t = 1: a new sampling run
    denoiser(x[:1], torch.full((1,), 0.8))  # another grid: a new run too
    assert net.estimates[0] is None
    torch.testing.assert_close(net.estimates[1], first)
    torch.testing.assert_close(net.estimates[2], second)
    assert net.estimates[3] is None and net.estimates[4] is None
    denoiser.reset()
    denoiser(x, torch.full((2,), 0.1))
    assert net.estimates[5] is None


def test_self_conditioned_guidance_passes_the_estimate_to_both_branches():
    net = _EstimateNet()
    labels = torch.tensor([0, 1])
    denoiser = Denoiser(net, CosineSchedule(), "x0", {"label": labels}, guidance_scale=2.0, self_condition=True)
    x = _noise(72)
    first = denoiser(x, torch.full((2,), 0.7))
    denoiser(x, torch.full((2,), 0.6))
    assert net.estimates[0] is None
    torch.testing.assert_close(net.estimates[1], torch.cat([first, first]))


def test_diffusion_loss_noises_the_corrupted_input_but_scores_against_the_clean_grid():
    """A net that returns its input, at times ~0: scored 0 on clean inputs, the corruption's square when the
    input is corrupted; samples above ``corrupt_below`` see the clean grid."""
    x0, schedule = _clean(15), CosineSchedule()
    seen = []

    def identity(x_t, t):
        seen.append(x_t.clone())
        return x_t

    def shift(x, generator):
        return x + 0.5

    kwargs = {"t_min": 0.0, "t_max": 1e-7, "generator": _gen(1)}
    clean = diffusion_loss(identity, x0, torch.ones_like(x0), schedule, "x0", **kwargs)
    corrupted = diffusion_loss(identity, x0, torch.ones_like(x0), schedule, "x0", corrupt=shift, **kwargs)
    assert float(clean) < 1e-6
    assert abs(float(corrupted) - 0.25) < 1e-4
    torch.testing.assert_close(seen[-1], x0 + 0.5, atol=1e-3, rtol=0)
    skipped = diffusion_loss(identity, x0, torch.ones_like(x0), schedule, "x0", corrupt=shift, corrupt_below=0.0,
                             t_min=1e-8, t_max=1e-7, generator=_gen(1))
    assert float(skipped) < 1e-6
    with pytest.raises(GCDError, match="x0 prediction"):
        diffusion_loss(identity, x0, torch.ones_like(x0), schedule, "eps", corrupt=shift)
