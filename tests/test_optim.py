"""Optimizers and LR schedulers: built from YAML, curves checked at key steps, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from kospeech.errors import ConfigError
from tests.test_transformer import TINY_EXTRACTOR, build_yaml, model_args

TINY_CTC_MODEL = (
    f"{{name: conformer, head: ctc, encoder: {{name: conformer, extractor: {TINY_EXTRACTOR}, d_model: 32, "
    "ff_dim: 64, num_layers: 1, kernel_size: 5, dropout: 0.0, attention: {name: relative_multi_head, num_heads: 2}}}"
)


def lr_curve(scheduler, optimizer, steps: int) -> list[float]:
    """lr(1..steps): the rate each update uses, stepping the scheduler after each update."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def make(cfg: str, lr: float = 1e-3):
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = build_yaml("optimizer", f"{{name: adam, lr: {lr}}}", params=params)
    return optimizer, build_yaml("scheduler", cfg, optimizer=optimizer)


# ---- optimizers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        "{name: adam, lr: 0.002, betas: [0.9, 0.98], weight_decay: 0.0001}",
        "{name: adamw, lr: 0.002, weight_decay: 0.01}",
        "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true}",
        "{name: radam, lr: 0.002, weight_decay: 0.0001}",
        "{name: adamp, lr: 0.002, weight_decay: 0.01}",
        "{name: novograd, lr: 0.01, betas: [0.95, 0.5], weight_decay: 0.001}",
    ],
)
def test_optimizer_trains_a_model_on_fbank(fbank_batch, cfg):
    model = build_yaml("model", TINY_CTC_MODEL, input_dim=80, vocab_size=fbank_batch["vocab_size"])
    optimizer = build_yaml("optimizer", cfg, params=model.parameters())
    assert isinstance(optimizer, torch.optim.Optimizer)
    losses = []
    for _ in range(6):
        loss = model(*model_args(fbank_batch))["loss"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    state = optimizer.state_dict()
    assert state["state"], "optimizer state must be saved for resume"


def _steps(optimizer, param: torch.nn.Parameter, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    out = []
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        out.append(param.detach().clone())
    return out


def test_novograd_follows_the_paper():
    """Ginsburg et al. (2019), Algorithm 1: v = ||g||^2 at the first step, then
    v <- b2 v + (1 - b2) ||g||^2; m <- b1 m + g / sqrt(v) + d w (m = g / sqrt(v) + d w first);
    w <- w - lr m."""
    w0 = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    grads = [torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.tensor([[1.0, -2.0], [2.0, 0.5]])]
    # the first step by hand: ||g|| = 5, m = g / 5 + 0.1 w, w1 = w0 - 0.5 m
    param = torch.nn.Parameter(w0.clone())
    opt = build_yaml("optimizer", "{name: novograd, lr: 0.5, betas: [0.9, 0.5], weight_decay: 0.1}", params=[param])
    got = _steps(opt, param, grads)
    assert got[0].flatten().tolist() == pytest.approx([0.65, 1.5, 0.475, -0.95], abs=1e-6)
    w, m, v = w0.clone(), None, None
    for g, after in zip(grads, got):
        v = g.pow(2).sum() if v is None else 0.5 * v + 0.5 * g.pow(2).sum()
        u = g / (v.sqrt() + 1e-8) + 0.1 * w
        m = u if m is None else 0.9 * m + u
        w = w - 0.5 * m
        torch.testing.assert_close(after, w)


def _adamp_reference(w, grads, *, lr, betas, eps, wd, delta, wd_ratio):
    """Heo et al. (2021), Algorithm 2 (AdamP), as in the authors' code (clovaai/AdamP)."""
    m, v, out = torch.zeros_like(w), torch.zeros_like(w), []
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        denom = (v.sqrt() / math.sqrt(1 - betas[1] ** t)) + eps
        perturb, ratio = m / denom, 1.0
        for rows in (w.view(w.size(0), -1), w.view(1, -1)):  # channel view, then layer view
            grows = g.view(rows.shape)
            cos = torch.nn.functional.cosine_similarity(rows, grows, dim=1, eps=eps).abs()
            if cos.max() < delta / math.sqrt(rows.size(1)):
                unit = rows / rows.norm(dim=1, keepdim=True).add(eps)
                p = perturb.view(rows.shape)
                perturb = (p - unit * (unit * p).sum(dim=1, keepdim=True)).view(w.shape)
                ratio = wd_ratio
                break
        w = w * (1 - lr * wd * ratio) - lr / (1 - betas[0] ** t) * perturb
        out.append(w.clone())
    return out


@pytest.mark.parametrize("orthogonal", [True, False], ids=["scale_invariant", "plain"])
def test_adamp_follows_the_paper(orthogonal):
    """A weight whose gradient is orthogonal to it (as behind a norm layer) gets its radial
    update removed and its decay scaled by wd_ratio; another gets Adam with decoupled decay."""
    torch.manual_seed(0)
    w0 = torch.randn(4, 6)
    grads = [torch.randn(4, 6) for _ in range(3)]
    if orthogonal:
        unit = w0 / w0.norm(dim=1, keepdim=True)
        grads = [g - unit * (unit * g).sum(dim=1, keepdim=True) for g in grads]
    else:
        grads = [g + 3 * w0 for g in grads]
    param = torch.nn.Parameter(w0.clone())
    # eps out of the way: the package and the authors add it on either side of the bias correction
    opt = build_yaml("optimizer", "{name: adamp, lr: 0.1, betas: [0.9, 0.99], weight_decay: 0.5, eps: 1.0e-12}",
                     params=[param])
    got = _steps(opt, param, grads)
    expected = _adamp_reference(w0, grads, lr=0.1, betas=(0.9, 0.99), eps=1e-12, wd=0.5, delta=0.1, wd_ratio=0.1)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
    radial = ((got[0] - w0 * (1 - 0.1 * 0.5 * (0.1 if orthogonal else 1.0))) * w0).sum(dim=1)
    if orthogonal:  # the update past the decay has no radial part
        assert radial.abs().max().item() < 1e-5
    else:
        assert radial.abs().max().item() > 1e-2


def test_radam_is_torchs_and_warms_up_itself():
    """Liu et al. (2020): while rho_t <= 5 (the first 5 updates at beta2 0.999) the step is
    un-adapted momentum SGD: lr * m_hat, whatever the gradient's scale."""
    param = torch.nn.Parameter(torch.zeros(2))
    opt = build_yaml("optimizer", "{name: radam, lr: 0.1}", params=[param])
    assert isinstance(opt, torch.optim.RAdam)
    got = _steps(opt, param, [torch.tensor([100.0, -0.01])])
    assert got[0].tolist() == pytest.approx([-10.0, 0.001])  # lr * g: no division by sqrt(v)


def test_adam_takes_betas_from_a_yaml_list():
    optimizer = build_yaml("optimizer", "{name: adam, betas: [0.8, 0.9]}", params=[torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_fuses_by_default_and_updates_as_the_loop_does(name):
    """The fused kernel is the default on CPU; ten updates with weight decay give the loop's
    weights within rounding."""
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(10)]
    weights = {}
    for fused in (None, False):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        opt = build_yaml("optimizer", f"{{name: {name}, lr: 0.01, weight_decay: 0.1}}"
                         if fused is None else f"{{name: {name}, lr: 0.01, weight_decay: 0.1, fused: false}}",
                         params=params)
        assert opt.defaults["fused"] is (fused is None)
        for g in grads:
            for p, gp in zip(params, g):
                p.grad = gp.clone()
            opt.step()
        weights[fused] = [p.detach() for p in params]
    for a, b in zip(weights[None], weights[False]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="fused=true needs float parameters"):
        build_yaml("optimizer", f"{{name: {name}, fused: true}}",
                   params=[torch.nn.Parameter(torch.zeros(1, device="meta"))])


def test_optimizer_errors_say_what_is_wrong():
    params = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ConfigError, match="lr must be > 0"):
        build_yaml("optimizer", "{name: adam, lr: 0}", params=params)
    with pytest.raises(ConfigError, match="nesterov needs momentum > 0"):
        build_yaml("optimizer", "{name: sgd, momentum: 0.0, nesterov: true}", params=params)
    with pytest.raises(ConfigError, match="unknown argument 'beta'.*Did you mean 'betas'"):
        build_yaml("optimizer", "{name: adam, beta: [0.9, 0.98]}", params=params)
    for name in ("radam", "adamp", "novograd"):
        with pytest.raises(ConfigError, match=f"optimizer '{name}': lr must be > 0"):
            build_yaml("optimizer", f"{{name: {name}, lr: -1}}", params=params)


def test_missing_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pytorch_optimizer", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"optimizer 'novograd' needs the pytorch-optimizer package: pip install"):
        build_yaml("optimizer", "{name: novograd}", params=[torch.nn.Parameter(torch.zeros(1))])


# ---- schedulers: curves -----------------------------------------------------------------------


def test_tri_stage_curve():
    opt, sched = make("{name: tri_stage, warmup_steps: 10, hold_steps: 5, decay_steps: 10, "
                      "init_lr_scale: 0.01, final_lr_scale: 0.05}")
    lrs = lr_curve(sched, opt, 30)
    peak = 1e-3
    assert lrs[0] == pytest.approx(0.01 * peak + 0.99 * peak / 10)  # update 1 of the ramp
    assert lrs[4] == pytest.approx(0.01 * peak + 0.99 * peak * 5 / 10)  # linear
    assert lrs[9] == pytest.approx(peak)  # update 10 reaches the peak
    assert lrs[10:15] == pytest.approx([peak] * 5)  # hold
    assert lrs[19] == pytest.approx(peak * 0.05**0.5)  # half way through the exponential decay
    assert lrs[24] == pytest.approx(0.05 * peak)  # end of decay
    assert lrs[29] == pytest.approx(0.05 * peak)  # stays at the floor


def test_noam_curve():
    opt, sched = make("{name: noam, d_model: 256, warmup_steps: 100, scale: 2.0}", lr=123.0)
    lrs = lr_curve(sched, opt, 400)

    def noam(n: int) -> float:
        return 2.0 * 256**-0.5 * min(n**-0.5, n * 100**-1.5)

    for n in (1, 50, 100, 101, 400):
        assert lrs[n - 1] == pytest.approx(noam(n))
    assert max(lrs) == pytest.approx(2.0 * (256 * 100) ** -0.5)  # the documented peak, at warm-up end
    assert lrs.index(max(lrs)) == 99
    assert lrs[399] == pytest.approx(lrs[99] / 2)  # 1/sqrt(n) decay: 4x the steps, half the rate


def test_warmup_plateau_decay_curve():
    opt, sched = make("{name: warmup_plateau_decay, init_lr: 0.0, peak_lr: 0.002, final_lr: 0.00002, "
                      "warmup_steps: 4, hold_steps: 6, decay_steps: 10}")
    lrs = lr_curve(sched, opt, 25)
    assert lrs[:4] == pytest.approx([0.0005, 0.001, 0.0015, 0.002])  # ramp-up, own peak (not optimizer lr)
    assert lrs[4:10] == pytest.approx([0.002] * 6)  # high plateau
    assert lrs[14] == pytest.approx(0.002 * (0.01**0.5))  # exponential: geometric mean half way
    assert lrs[19:] == pytest.approx([0.00002] * 6)  # low plateau from update 20 on


def test_warmup_plateau_decay_peak_defaults_to_optimizer_lr():
    opt, sched = make("{name: warmup_plateau_decay, warmup_steps: 2, hold_steps: 3, decay_steps: 5}", lr=0.01)
    assert lr_curve(sched, opt, 4)[1:] == pytest.approx([0.01] * 3)


def test_cosine_curve():
    opt, sched = make("{name: cosine, warmup_steps: 10, total_steps: 110, min_lr: 0.0001}")
    lrs = lr_curve(sched, opt, 130)
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[59] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way down the cosine
    assert lrs[34] == pytest.approx(1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[109:] == pytest.approx([1e-4] * 21)  # the floor
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone after warm-up


def test_budget_decay_follows_the_spent_budget_not_the_step_count():
    opt, sched = make(
        "{name: budget_decay, warmup_steps: 4, init_lr_scale: 0.0, decay_start: 0.5, final_lr_scale: 0.1}"
    )
    lrs = lr_curve(sched, opt, 6)
    assert lrs[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])
    rates = {}
    for share in (0.3, 0.5, 0.75, 1.0):
        sched.set_progress(share)
        sched.step()
        rates[share] = opt.param_groups[0]["lr"]
    assert rates[0.3] == pytest.approx(1e-3) and rates[0.5] == pytest.approx(1e-3)
    assert rates[0.75] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half way down the cosine
    assert rates[1.0] == pytest.approx(1e-4)
    sched.set_progress(0.2)  # a resumed run's new clock: the rate never climbs back
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    sched.set_progress(7.0)
    assert sched.progress == 1.0


def test_warmup_reduce_on_plateau_cuts_after_patience():
    opt, sched = make("{name: warmup_reduce_on_plateau, warmup_steps: 4, init_lr_scale: 0.0, factor: 0.5, "
                      "patience: 1, min_lr: 0.0002}")
    assert lr_curve(sched, opt, 4) == pytest.approx([0.00025, 0.0005, 0.00075, 0.001])
    sched.step_metric(10.0)  # first value: the best so far
    sched.step_metric(9.0)  # improved
    sched.step_metric(9.0)  # 1 bad evaluation: within patience
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    sched.step_metric(9.5)  # 2 bad evaluations: cut
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert sched.get_last_lr() == pytest.approx([5e-4])
    assert lr_curve(sched, opt, 3) == pytest.approx([5e-4] * 3)  # per-update steps keep the cut
    for value in (9.6, 9.7, 9.8, 9.9, 10.0, 10.1):
        sched.step_metric(value)
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-4)  # 1/4 then 1/8 clamped to min_lr


def test_warmup_reduce_on_plateau_max_mode_and_warmup_metrics():
    opt, sched = make("{name: warmup_reduce_on_plateau, warmup_steps: 10, mode: max, patience: 0}")
    sched.step_metric(0.5)
    sched.step_metric(0.1)  # worse, but still in warm-up: no cut
    assert sched.num_reductions == 0
    lr_curve(sched, opt, 10)
    sched.step_metric(0.6)  # better in max mode
    sched.step_metric(0.55)  # worse, patience 0: cut
    assert sched.num_reductions == 1


@pytest.mark.parametrize(
    "cfg,message",
    [
        ("{name: cosine, warmup_steps: 10, total_steps: 10}", "total_steps \\(10\\) must exceed warmup_steps"),
        ("{name: tri_stage, final_lr_scale: 0.0}", "final_lr_scale must be in"),
        ("{name: noam, warmup_steps: 0}", "warmup_steps and d_model must be >= 1"),
        ("{name: warmup_reduce_on_plateau, factor: 1.5}", "factor must be in \\(0, 1\\)"),
        ("{name: warmup_plateau_decay, final_lr: 0.0}", "peak_lr and final_lr must be > 0"),
        ("{name: tri_stage, warmup_steps: -1}", "warmup_steps must be >= 0"),
        ("{name: budget_decay, decay_start: 1.0}", "decay_start must be in \\[0, 1\\)"),
        ("{name: budget_decay, final_lr_scale: 2.0}", "final_lr_scale must be in \\[0, 1\\]"),
    ],
)
def test_scheduler_config_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        make(cfg)


# ---- schedulers: exact resume --------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        "{name: tri_stage, warmup_steps: 5, hold_steps: 3, decay_steps: 8}",
        "{name: noam, warmup_steps: 5}",
        "{name: warmup_plateau_decay, warmup_steps: 5, hold_steps: 3, decay_steps: 8}",
        "{name: cosine, warmup_steps: 5, total_steps: 15}",
        "{name: warmup_reduce_on_plateau, warmup_steps: 5, patience: 0}",
        "{name: budget_decay, warmup_steps: 5, decay_start: 0.1}",
    ],
)
def test_state_dict_resumes_exactly(cfg):
    def run(sched, opt, metrics):
        out = lr_curve(sched, opt, 4)
        for m in metrics:
            sched.step_metric(m) if hasattr(sched, "step_metric") else None
            sched.set_progress(m / 4) if hasattr(sched, "set_progress") else None
        return out + lr_curve(sched, opt, 4)

    opt, sched = make(cfg)
    straight = run(sched, opt, []) + run(sched, opt, [1.0, 2.0]) + run(sched, opt, [3.0])

    opt1, sched1 = make(cfg)
    first = run(sched1, opt1, []) + run(sched1, opt1, [1.0, 2.0])
    saved_opt, saved_sched = opt1.state_dict(), sched1.state_dict()
    opt2, sched2 = make(cfg, lr=0.5)  # a different lr on purpose: the saved state must win
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    assert sched2.last_epoch == sched1.last_epoch
    resumed = first + run(sched2, opt2, [3.0])
    assert resumed == pytest.approx(straight, rel=1e-12)
    assert len(set(straight)) > 3  # the curve really moves in this window
