"""Exit-weighting strategies (cgt.losses): every rule checked against weights worked out by hand.

The hand-made batch used throughout (E = 3 exits, B = 3 samples, K = 3 classes, y = [0, 1, 2]);
logits are logs of small integers so that every softmax is a simple fraction:

    exit 1: s0 [ln 8, 0, 0]     → p = [0.8, 0.1, 0.1]      right (y=0), confident (0.8)
            s1 [ln 8, 0, 0]     → p = [0.8, 0.1, 0.1]      wrong (y=1), p(y) = 0.1
            s2 [0, 0, ln 1.5]   → p = [2/7, 2/7, 3/7]      right (y=2) but max p = 3/7 < 0.5
    exit 2: s0 [ln 3, 0, 0]     → p = [0.6, 0.2, 0.2]      right, p(y) = 0.6
            s1 [0, ln 9, 0]     → p = [1/11, 9/11, 1/11]   right, confident (9/11)
            s2 [ln 9, 0, 0]     → p = [9/11, 1/11, 1/11]   wrong, p(y) = 1/11
    exit 3: [0, 0, 0] for all (no gate ever looks at the last exit's output)
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cgt.losses import STRATEGIES, exit_weights, resolve_options, weighted_exit_loss
from cgt.models import EarlyExitNet

L = math.log
Y = torch.tensor([0, 1, 2])
EPS = 1e-3

# true-class probabilities p_e(y) of exits 1 and 2, per sample (read off the table above)
S1 = [0.8, 0.1, 3 / 7]
S2 = [0.6, 9 / 11, 1 / 11]


def hand_logits() -> torch.Tensor:
    return torch.tensor([
        [[L(8), 0, 0], [L(8), 0, 0], [0, 0, L(1.5)]],
        [[L(3), 0, 0], [0, L(9), 0], [L(9), 0, 0]],
        [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
    ], dtype=torch.float32)


def rows(unnormalised: list[list[float]], normalize: bool) -> torch.Tensor:
    t = torch.tensor(unnormalised, dtype=torch.float64)
    return (t / t.sum(dim=1, keepdim=True) if normalize else t).float()


def assert_weights(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == (3, 3)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- hand-computed weights, per strategy
COVERED: set[str] = set()


def covers(name: str):
    COVERED.add(name)
    return lambda f: f


@covers("hard_cgt")
@pytest.mark.parametrize("normalize", [True, False])
def test_hard_cgt_fixed_lambdas_by_hand(normalize):
    """HardCGT, τ=0.5, ε=1e-3, λ=[1,1,1]: only exits after a failure of every earlier exit learn."""
    # success m (correct and max p >= 0.5): exit 1 = [1, 0, 0] (s2 is right but 3/7 < 0.5),
    # exit 2 = [1, 1, 0]; elig_1 = 1, elig_2 = 1 - m1, elig_3 = (1 - m1)(1 - m2):
    #   s0: [1, 0, 0]   s1: [1, 1, 0]   s2: [1, 1, 1];   w = 1·elig + 0.001
    expected = rows([[1.001, 0.001, 0.001],
                     [1.001, 1.001, 0.001],
                     [1.001, 1.001, 1.001]], normalize)
    w = exit_weights(hand_logits(), Y, "hard_cgt", tau_train=0.5, eps_leak=EPS, lambdas=[1.0, 1.0, 1.0],
                     normalize=normalize)
    assert_weights(w, expected)
    if normalize:  # spelled out once: s0 → [1.001, 0.001, 0.001] / 1.003
        assert w[0].tolist() == pytest.approx([0.998006, 0.000997, 0.000997], abs=1e-6)


@covers("hard_cgt")
def test_hard_cgt_high_tau_gates_nothing():
    """HardCGT with τ=0.9: no exit is confident enough (0.8, 9/11 < 0.9), so every exit learns every sample."""
    w = exit_weights(hand_logits(), Y, "hard_cgt", tau_train=0.9, eps_leak=EPS, lambdas=[1.0, 1.0, 1.0])
    assert_weights(w, torch.full((3, 3), 1 / 3))


@covers("hard_cgt")
@pytest.mark.parametrize("progress, lam", [(0.0, (1.0, 0.55, 0.1)),
                                           (0.5, (0.6, 0.575, 0.55)),   # midpoint of start and end
                                           (1.0, (0.2, 0.6, 1.0))])
def test_hard_cgt_annealed_lambdas_by_hand(progress, lam):
    """HardCGT with the documented 3-exit λ schedule (1.0,0.55,0.1)→(0.2,0.6,1.0), linear in progress."""
    l1, l2, l3 = lam
    # elig as in test_hard_cgt_fixed_lambdas_by_hand; w = λ·elig + ε, then normalised per row
    expected = rows([[l1 + EPS, EPS, EPS],
                     [l1 + EPS, l2 + EPS, EPS],
                     [l1 + EPS, l2 + EPS, l3 + EPS]], True)
    w = exit_weights(hand_logits(), Y, "hard_cgt", progress=progress)  # defaults: τ=0.5, ε=1e-3, annealed
    assert_weights(w, expected)


def sigmoid_residual(s: float, tau: float, k: float) -> float:
    return 1.0 - 1.0 / (1.0 + math.exp(-(s - tau) * k))


@covers("soft_cgt")
@pytest.mark.parametrize("tau, k", [(0.9, 1.0), (0.5, 10.0)])
def test_soft_cgt_sigmoid_residual_by_hand(tau, k):
    """SoftCGT, residual r = 1 − sigmoid((p(y) − τ)·k): elig = [1, r1, r1·r2], λ=[1,1,1], ε=1e-3."""
    r1 = [sigmoid_residual(s, tau, k) for s in S1]
    r2 = [sigmoid_residual(s, tau, k) for s in S2]
    if (tau, k) == (0.9, 1.0):  # the authors' defaults: a weak gate, r spans only ≈ 0.48–0.71
        assert r1 == pytest.approx([0.524979, 0.689974, 0.615722], abs=1e-6)
        assert r2 == pytest.approx([0.574443, 0.520443, 0.691916], abs=1e-6)
    expected = rows([[1 + EPS, r1[i] + EPS, r1[i] * r2[i] + EPS] for i in range(3)], True)
    w = exit_weights(hand_logits(), Y, "soft_cgt", tau_train=tau, sigmoid_scale=k, residual="sigmoid",
                     lambdas=[1.0, 1.0, 1.0], eps_leak=EPS)
    assert_weights(w, expected)


@covers("soft_cgt")
@pytest.mark.parametrize("normalize", [True, False])
def test_soft_cgt_linear_residual_by_hand(normalize):
    """SoftCGT with the plain residual r = 1 − p(y): elig = [1, 1−s1, (1−s1)(1−s2)]."""
    # s0: r1 = 0.2, r2 = 0.4       → elig [1, 0.2, 0.08]
    # s1: r1 = 0.9, r2 = 2/11      → elig [1, 0.9, 0.9·2/11 = 0.163636...]
    # s2: r1 = 4/7, r2 = 10/11     → elig [1, 4/7, 40/77]
    expected = rows([[1 + EPS, 0.2 + EPS, 0.08 + EPS],
                     [1 + EPS, 0.9 + EPS, 0.9 * 2 / 11 + EPS],
                     [1 + EPS, 4 / 7 + EPS, 40 / 77 + EPS]], normalize)
    w = exit_weights(hand_logits(), Y, "soft_cgt", residual="linear", lambdas=[1.0, 1.0, 1.0], eps_leak=EPS,
                     normalize=normalize)
    assert_weights(w, expected)


@covers("soft_cgt")
def test_soft_cgt_annealed_lambdas_by_hand():
    """SoftCGT defaults at progress 0.5: λ = (0.6, 0.575, 0.55) multiplies the linear-residual eligibility."""
    lam = (0.6, 0.575, 0.55)
    elig = [[1, 0.2, 0.08], [1, 0.9, 0.9 * 2 / 11], [1, 4 / 7, 40 / 77]]
    expected = rows([[lam[e] * elig[i][e] + EPS for e in range(3)] for i in range(3)], True)
    w = exit_weights(hand_logits(), Y, "soft_cgt", progress=0.5, residual="linear")
    assert_weights(w, expected)


@covers("branchy_gate")
def test_branchy_gate_by_hand():
    """BranchyNet gate: a sample leaves training at the first exit whose entropy / ln K is below the threshold."""
    def h_norm(p):  # normalised entropy, by hand
        return -sum(q * math.log(q) for q in p) / math.log(3)
    # exit 1: s0, s1 [0.8, 0.1, 0.1] → 0.5817;  s2 [2/7, 2/7, 3/7] → 0.9821
    # exit 2: s0 [0.6, 0.2, 0.2] → 0.8650;      s1, s2 [9/11, 1/11, 1/11] → 0.5463
    assert h_norm([0.8, 0.1, 0.1]) == pytest.approx(0.58167, abs=1e-4)
    assert h_norm([2 / 7, 2 / 7, 3 / 7]) == pytest.approx(0.98214, abs=1e-4)
    assert h_norm([0.6, 0.2, 0.2]) == pytest.approx(0.86498, abs=1e-4)
    assert h_norm([1 / 11, 9 / 11, 1 / 11]) == pytest.approx(0.54630, abs=1e-4)
    # threshold 0.6: exit 1 stops s0 and s1 — s1 although it is WRONG there (confidence only);
    # exit 2 stops s2 (wrong there too). elig: s0 [1,0,0], s1 [1,0,0], s2 [1,1,0]; ε = 0 by default.
    w = exit_weights(hand_logits(), Y, "branchy_gate", entropy_threshold=0.6)
    assert_weights(w, rows([[1, 0, 0], [1, 0, 0], [1, 1, 0]], True))
    # the default threshold 0.3 stops nothing here: uniform weights
    assert_weights(exit_weights(hand_logits(), Y, "branchy_gate"), torch.full((3, 3), 1 / 3))
    # un-normalised, with a leak
    w = exit_weights(hand_logits(), Y, "branchy_gate", entropy_threshold=0.6, eps_leak=0.01, normalize=False)
    assert_weights(w, rows([[1.01, 0.01, 0.01], [1.01, 0.01, 0.01], [1.01, 1.01, 0.01]], False))


@covers("joint_depth")
@pytest.mark.parametrize("normalize", [True, False])
def test_joint_depth_by_hand(normalize):
    """joint_depth: λ_e ∝ e, i.e. [1, 2, 3] → [1/6, 2/6, 3/6] per sample, whatever the logits."""
    expected = torch.tensor([[1 / 6, 2 / 6, 3 / 6]] * 3) if normalize else torch.tensor([[1.0, 2.0, 3.0]] * 3)
    assert_weights(exit_weights(hand_logits(), Y, "joint_depth", normalize=normalize), expected)


@covers("joint_uniform")
@pytest.mark.parametrize("normalize", [True, False])
def test_joint_uniform_by_hand(normalize):
    """joint_uniform: equal weights, 1/3 each (1 each un-normalised)."""
    expected = torch.full((3, 3), 1 / 3 if normalize else 1.0)
    assert_weights(exit_weights(hand_logits(), Y, "joint_uniform", normalize=normalize), expected)


@covers("joint_annealed")
@pytest.mark.parametrize("progress, lam", [(0.0, (1.0, 0.55, 0.1)), (0.5, (0.6, 0.575, 0.55)),
                                           (1.0, (0.2, 0.6, 1.0))])
def test_joint_annealed_by_hand(progress, lam):
    """joint_annealed: the authors' λ schedule alone, no gate: λ / Σλ for every sample."""
    total = sum(lam)  # 1.65, 1.725, 1.8
    expected = torch.tensor([[v / total for v in lam]] * 3)
    assert_weights(exit_weights(hand_logits(), Y, "joint_annealed", progress=progress), expected)


@covers("last_exit")
def test_last_exit_by_hand():
    """last_exit: weights [0, 0, 1] — only the last exit's loss is weighted."""
    assert_weights(exit_weights(hand_logits(), Y, "last_exit"), torch.tensor([[0.0, 0.0, 1.0]] * 3))


@covers("grad_equilibrium")
def test_grad_equilibrium_weights_and_rescaled_gradients_by_hand():
    """grad_equilibrium: weights as joint_uniform (1/3 each); in the network, block e's output gradient
    is (1 / (E − e))·(head e's) + ((E − e − 1) / (E − e))·(the later blocks'). Scalar blocks
    h1 = a·x, h2 = b·h1, h3 = c·h2, identity heads, loss y1 + y2 + y3, a, b, c = 2, 3, 5, x = 1:
      plain:       ∂L/∂h3 = 1, ∂L/∂h2 = 1 + c = 6,           ∂L/∂h1 = 1 + b·6 = 19
      equilibrium: ∂L/∂h3 = 1, ∂L/∂h2 = ½·1 + ½·(c·1) = 3,   ∂L/∂h1 = ⅓·1 + ⅔·(b·3) = 19/3
    and ∂L/∂a = x·∂L/∂h1."""
    assert_weights(exit_weights(hand_logits(), Y, "grad_equilibrium"), torch.full((3, 3), 1 / 3))

    class Scale(nn.Module):
        def __init__(self, value: float):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([value]))

        def forward(self, h):
            return h * self.w

    for equilibrium, expected in ((False, 19.0), (True, 19 / 3)):
        net = EarlyExitNet([Scale(2.0), Scale(3.0), Scale(5.0)], [nn.Identity()] * 3)
        net(torch.ones(1, 1), gradient_equilibrium=equilibrium).sum().backward()
        assert net.blocks[0].w.grad.item() == pytest.approx(expected)
        # forward values never change: h1, h2, h3 = 2, 6, 30
        torch.testing.assert_close(net(torch.ones(1, 1), gradient_equilibrium=equilibrium).flatten(),
                                   torch.tensor([2.0, 6.0, 30.0]))
    assert STRATEGIES["grad_equilibrium"].gradient_equilibrium


@covers("self_distill")
def test_self_distillation_by_hand():
    """self_distill: weights as joint_uniform, plus distill_weight · mean_e T²·KL(p_3^T ‖ p_e^T) with the
    last exit as teacher. With T = 1: the teacher (exit 3) is uniform, so KL(u ‖ p) = Σ_k ⅓ ln(⅓ / p_k);
    for exit 1 sample 0, p = [0.8, 0.1, 0.1] → ⅓(ln(1/2.4) + 2 ln(10/3)). Averaged over the batch and
    the two early exits, times distill_weight 0.5."""
    from cgt.losses import self_distillation_loss

    assert_weights(exit_weights(hand_logits(), Y, "self_distill"), torch.full((3, 3), 1 / 3))
    probs = {1: [[0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [2 / 7, 2 / 7, 3 / 7]],
             2: [[0.6, 0.2, 0.2], [1 / 11, 9 / 11, 1 / 11], [9 / 11, 1 / 11, 1 / 11]]}
    kl = {e: sum(sum(math.log((1 / 3) / p) / 3 for p in row) for row in rows_) / 3 for e, rows_ in probs.items()}
    expected = 0.5 * (kl[1] + kl[2]) / 2
    got = self_distillation_loss(hand_logits(), Y, temperature=1.0, distill_weight=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # the temperature softens both sides and the loss is scaled by T²; the teacher gets no gradient
    logits = hand_logits().requires_grad_(True)
    self_distillation_loss(logits, Y, temperature=3.0, distill_weight=1.0).backward()
    assert logits.grad[-1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0
    spec = STRATEGIES["self_distill"]
    assert spec.extra(hand_logits(), Y, resolve_options("self_distill", 3, temperature=1.0, distill_weight=0.5)
                      ).item() == pytest.approx(expected, rel=1e-5)


def test_every_strategy_has_a_hand_computed_test():
    """The hand-computed tests above cover every registered strategy (a new one needs its own)."""
    assert COVERED == set(STRATEGIES)


def test_list_of_exit_logits_is_accepted():
    """exit_logits may be a list of E (B, K) tensors: same weights as the stacked (E, B, K) tensor."""
    lg = hand_logits()
    assert torch.equal(exit_weights(list(lg), Y, "hard_cgt"), exit_weights(lg, Y, "hard_cgt"))


# ---------------------------------------------------------------- properties
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_weights_carry_no_gradient(strategy):
    """Weights are detached even when the logits require grad: gates are never trained through."""
    lg = hand_logits().requires_grad_(True)
    w = exit_weights(lg, Y, strategy)
    assert not w.requires_grad and w.grad_fn is None


@pytest.mark.parametrize("strategy", sorted(s for s in STRATEGIES if "normalize" in STRATEGIES[s].defaults))
def test_normalize_makes_rows_sum_to_one(strategy):
    """normalize=True: each sample's weights over the exits sum to 1 (random logits, every progress)."""
    g = torch.Generator().manual_seed(0)
    lg = torch.randn(3, 16, 5, generator=g) * 3
    y = torch.randint(0, 5, (16,), generator=g)
    for progress in (0.0, 0.3, 1.0):
        w = exit_weights(lg, y, strategy, progress=progress, normalize=True)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(16))
        assert (w >= 0).all()


@pytest.mark.parametrize("residual", ["sigmoid", "linear"])
def test_soft_cgt_weights_monotone_in_exit1_confidence(residual):
    """SoftCGT: as exit 1's true-class probability rises, normalised w_1 rises and w_2, w_3 fall."""
    b = 8
    y = torch.zeros(b, dtype=torch.long)
    lg = torch.zeros(3, b, 4)
    lg[0, :, 0] = torch.linspace(-2.0, 6.0, b)  # p_1(y) increasing along the batch
    lg[1, :, 0] = 0.5                             # exits 2 and 3 identical for every sample
    p1 = lg[0].softmax(-1)[:, 0]
    assert (p1.diff() > 0).all()
    for lambdas in ([1.0, 1.0, 1.0], "annealed"):
        w = exit_weights(lg, y, "soft_cgt", residual=residual, lambdas=lambdas, progress=0.5)
        assert (w[:, 0].diff() > 0).all()
        assert (w[:, 1].diff() < 0).all()
        assert (w[:, 2].diff() < 0).all()


# ---------------------------------------------------------------- HardCGT gradient isolation
def tiny_net() -> EarlyExitNet:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(4, 6), nn.Tanh()), nn.Sequential(nn.Linear(6, 6), nn.Tanh()),
              nn.Sequential(nn.Linear(6, 6), nn.Tanh())]
    heads = [nn.Linear(6, 3) for _ in range(3)]
    net = EarlyExitNet(blocks, heads)
    with torch.no_grad():
        net.heads[0].bias[1] = 20.0  # exit 1 is right (y = 1) and confident on every sample
    return net


def grads_after(net: EarlyExitNet, strategy: str, **options) -> dict[str, torch.Tensor]:
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    y = torch.ones(5, dtype=torch.long)
    logits = net(x)
    assert (logits[0].softmax(-1)[:, 1] > 0.99).all()
    net.zero_grad()
    weighted_exit_loss(logits, y, exit_weights(logits, y, strategy, **options)).backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_hard_cgt_isolates_deeper_exits_when_exit1_succeeds():
    """HardCGT with ε=0: a sample exit 1 gets right and confident sends no gradient to exits 2, 3 or blocks 2, 3."""
    g = grads_after(tiny_net(), "hard_cgt", eps_leak=0.0, lambdas=[1.0, 1.0, 1.0])
    for name, grad in g.items():
        if name.startswith(("heads.1", "heads.2", "blocks.1", "blocks.2")):
            assert torch.count_nonzero(grad) == 0, name
    assert torch.count_nonzero(g["heads.0.weight"]) > 0 and torch.count_nonzero(g["blocks.0.0.weight"]) > 0


def test_hard_cgt_leak_is_bounded_by_eps():
    """HardCGT with ε=1e-3: heads 2 and 3 get a gradient, exactly (ε/1.003)/(1/3) of joint_uniform's."""
    leak = grads_after(tiny_net(), "hard_cgt", eps_leak=EPS, lambdas=[1.0, 1.0, 1.0])
    uniform = grads_after(tiny_net(), "joint_uniform")
    ratio = (EPS / (1 + 3 * EPS)) / (1 / 3)  # w_2 = w_3 = 0.001 / 1.003 against 1/3: ≈ 3e-3
    for name in ("heads.1.weight", "heads.1.bias", "heads.2.weight", "heads.2.bias"):
        assert torch.count_nonzero(leak[name]) > 0, name
        torch.testing.assert_close(leak[name], uniform[name] * ratio, rtol=1e-4, atol=1e-9)
        assert leak[name].abs().max() <= 3.1 * EPS * uniform[name].abs().max()


# ---------------------------------------------------------------- the loss
def test_weighted_exit_loss_by_hand():
    """weighted_exit_loss = Σ_e mean_i w[i,e]·CE_e(i), CE = −ln p_e(y) read off the hand-made table (B=2 ≠ E=3)."""
    lg, y = hand_logits()[:, :2], Y[:2]  # samples s0, s1: the mean over samples and the sum over exits differ
    w = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    ce = [[-L(0.8), -L(0.1)],          # exit 1: p(y) = 0.8, 0.1
          [-L(0.6), -L(9 / 11)],       # exit 2: p(y) = 0.6, 9/11
          [-L(1 / 3), -L(1 / 3)]]      # exit 3: uniform
    # = (0.5·0.2231 + 0.1·2.3026)/2 + (0.3·0.5108 + 0.1·0.2007)/2 + (0.2·1.0986 + 0.8·1.0986)/2
    expected = sum((w[0, e].item() * ce[e][0] + w[1, e].item() * ce[e][1]) / 2 for e in range(3))
    assert expected == pytest.approx(0.17092 + 0.08666 + 0.54931, abs=1e-4)
    loss = weighted_exit_loss(lg, y, w)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # label smoothing ε: CE = (1 − ε)(−ln p_y) + ε · mean_k(−ln p_k)
    eps_ls = 0.1
    logp = lg.double().log_softmax(-1)
    smoothed = sum(sum(w[i, e].item() * ((1 - eps_ls) * ce[e][i] - eps_ls * logp[e, i].mean().item())
                       for i in range(2)) / 2 for e in range(3))
    loss_ls = weighted_exit_loss(lg, y, w, label_smoothing=eps_ls)
    assert loss_ls.item() == pytest.approx(smoothed, rel=1e-5)
    assert abs(loss_ls.item() - loss.item()) > 1e-3


def test_weighted_exit_loss_does_not_train_the_weights():
    """Weights that require grad are detached inside the loss: no gradient reaches them."""
    w = torch.full((3, 3), 1 / 3, requires_grad=True)
    lg = hand_logits().requires_grad_(True)
    weighted_exit_loss(lg, Y, w).backward()
    assert w.grad is None and lg.grad is not None


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("strategy, options, match", [
    ("nope", {}, r"unknown strategy 'nope'; valid choices: \[.*'hard_cgt'.*'soft_cgt'"),
    ("hard_cgt", {"tau": 0.5}, r"unknown option.*'tau'.*valid options: \[.*'eps_leak'.*'tau_train'"),
    ("joint_uniform", {"tau_train": 0.5}, r"unknown option.*'tau_train'.*valid options"),
    ("hard_cgt", {"tau_train": 0}, r"tau_train=0 must be in the open interval \(0, 1\)"),
    ("hard_cgt", {"tau_train": 1}, r"tau_train=1 must be in the open interval"),
    ("soft_cgt", {"tau_train": 1.5}, r"tau_train=1.5 must be in the open interval"),
    ("soft_cgt", {"tau_train": -0.1}, r"tau_train=-0.1 must be in the open interval"),
    ("branchy_gate", {"entropy_threshold": 0.0}, r"entropy_threshold=0.0 must be in the open interval"),
    ("hard_cgt", {"eps_leak": -1e-3}, r"eps_leak=-0.001 must be >= 0"),
    ("hard_cgt", {"lambdas": [1.0, 1.0]}, r"lambdas \[1.0, 1.0\] has length 2; the model has 3 exits"),
    ("joint_annealed", {"lambdas": [[1.0, 0.5, 0.1], [0.2, 1.0]]}, r"has length 2; the model has 3 exits"),
    ("hard_cgt", {"lambdas": [1.0, -1.0, 1.0]}, r"lambdas .* must be non-negative"),
    ("soft_cgt", {"residual": "tanh"}, r"residual='tanh'; valid choices: \['sigmoid', 'linear'\]"),
    ("soft_cgt", {"sigmoid_scale": 0.0}, r"sigmoid_scale=0.0 must be > 0"),
    ("soft_cgt", {"sigmoid_scale": -2.0}, r"sigmoid_scale=-2.0 must be > 0"),
    ("hard_cgt", {"lambdas": "foo"}, r"lambdas='foo': valid choices are 'annealed'"),
    ("hard_cgt", {"normalize": 1}, r"normalize=1 must be True or False"),
    ("self_distill", {"temperature": 0.0}, r"temperature=0.0 must be > 0"),
    ("self_distill", {"distill_weight": -0.1}, r"distill_weight=-0.1 must be >= 0"),
    ("grad_equilibrium", {"temperature": 2.0}, r"unknown option.*'temperature'.*valid options"),
])
def test_bad_options_raise_naming_the_problem(strategy, options, match):
    """Every bad strategy name or option raises ValueError naming it (and the valid choices)."""
    with pytest.raises(ValueError, match=match):
        exit_weights(hand_logits(), Y, strategy, **options)
    with pytest.raises(ValueError, match=match):
        resolve_options(strategy, 3, **options)


def test_accepted_options_never_give_nan_weights():
    """Options accepted by validation never yield NaN weights: λ_1 = 0, ε = 0 and exit 1 succeeding on s0
    gives s0 an all-zero row, which normalisation must not turn into 0/0 (either rejected up front or finite)."""
    try:
        w = exit_weights(hand_logits(), Y, "hard_cgt", lambdas=[0.0, 1.0, 1.0], eps_leak=0.0)
    except ValueError:
        return
    assert torch.isfinite(w).all(), w
    # the other rows are untouched: s1 elig [1, 1, 0] → [0, 1, 0]; s2 elig [1, 1, 1] → [0, 1/2, 1/2]
    torch.testing.assert_close(w[1:], torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]))


@pytest.mark.parametrize("progress", [-0.5, 2.0])
def test_progress_outside_unit_interval_is_rejected_or_clamped(progress):
    """progress outside [0, 1] raises ValueError naming it, or is clamped: weights are never negative."""
    try:
        w = exit_weights(hand_logits(), Y, "joint_annealed", progress=progress)
    except ValueError as exc:
        assert "progress" in str(exc)
        return
    assert (w >= 0).all(), w


# ---------------------------------------------------------------- class balance, mixed, gradient equilibrium
def test_inverse_frequency_by_hand():
    """Counts [6, 2, 0, 4] of 12: weights 12 / (3 · n_c) = [2/3, 2, 0, 1]; the mean sample weight is 1."""
    from cgt.losses import inverse_frequency

    y = torch.tensor([0] * 6 + [1] * 2 + [3] * 4)
    w = inverse_frequency(y, 4)
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 0.0, 1.0]))
    assert w[y].mean().item() == pytest.approx(1.0)


@covers("joint_balanced")
def test_joint_balanced_weights_each_sample_by_its_class_in_the_training_loss():
    """One batch, one step: the epoch's loss is Σ_e mean_i [w(y_i)/3 · CE_e(i)] with w the inverse
    frequencies of the batch (= the whole training set here), worked out from the untrained model."""
    import torch.nn.functional as F

    from cgt.losses import inverse_frequency
    from cgt.models import generic_mlp
    from cgt.train import EpochSetup, TrainConfig, new_state, train_epoch

    torch.manual_seed(0)
    x, y = torch.randn(12, 5), torch.tensor([0] * 8 + [1] * 3 + [2])
    torch.manual_seed(1)
    model = generic_mlp((5,), 3, width=8, depth=3)
    cfg = TrainConfig(epochs=1, batch_size=12, device="cpu", lr=1e-9, weight_decay=0.0)
    weights = inverse_frequency(y, 3)
    model.train()
    with torch.no_grad():
        order = torch.randperm(12, generator=torch.Generator().manual_seed(cfg.seed * 100_003))
        ce = torch.stack([F.cross_entropy(z, y[order], reduction="none") for z in model(x[order])])  # (E, B)
    want = (weights[y[order]] / 3 * ce).mean(dim=1).sum().item()
    stats = train_epoch(model, new_state(model, cfg), EpochSetup(cfg, "joint_balanced",
                                                                 resolve_options("joint_balanced", 3),
                                                                 class_weights=weights), x, y)
    assert stats["loss"] == pytest.approx(want, rel=1e-5)
    assert sum(stats["mean_weight"]) == pytest.approx(1.0)  # the mean class weight over the training set is 1


@covers("mixed")
def test_mixed_trains_the_last_exit_alone_then_every_exit():
    """mixed, last_only_until = 0.5: λ = [0, 0, 1] before half-way, equal weights after."""
    logits = torch.zeros(3, 3, 3)
    before = exit_weights(logits, Y, "mixed", progress=0.4)
    after = exit_weights(logits, Y, "mixed", progress=0.6)
    assert torch.allclose(before, torch.tensor([[0.0, 0.0, 1.0]] * 3))
    assert torch.allclose(after, torch.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="last_only_until"):
        resolve_options("mixed", 3, last_only_until=1.0)


@pytest.mark.parametrize("optimizer, same", [("adamw", True), ("sgd", False)])
def test_gradient_equilibrium_is_a_no_op_under_adamw_and_not_under_sgd(optimizer, same):
    """Gradient equilibrium rescales each block's gradient by a constant (1/(E − e), telescoped). One
    optimiser step from the same weights on the same batch: under AdamW (invariant to a constant gradient
    scale per parameter) the weights equal joint_uniform's up to Adam's ε; under SGD with momentum they differ."""
    import copy

    from cgt.models import generic_mlp
    from cgt.train import EpochSetup, TrainConfig, new_state, train_epoch

    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    torch.manual_seed(1)
    start = generic_mlp((6,), 3, width=16, depth=3)
    cfg = TrainConfig(epochs=1, batch_size=32, device="cpu", optimizer=optimizer, lr=1e-2, weight_decay=0.0)
    after = {}
    for strategy in ("joint_uniform", "grad_equilibrium"):
        model = copy.deepcopy(start)
        train_epoch(model, new_state(model, cfg), EpochSetup(cfg, strategy, resolve_options(strategy, 3)), x, y)
        after[strategy] = dict(model.named_parameters())
    # blocks.0: Linear → BatchNorm → ReLU. The Linear's bias is left out: BatchNorm cancels any constant
    # shift, so its gradient is zero up to rounding (~1e-9), where Adam's ε (1e-8) decides the step.
    block_params = [n for n in after["joint_uniform"] if n.startswith("blocks.0.") and n != "blocks.0.0.bias"]
    close = [torch.allclose(after["joint_uniform"][n], after["grad_equilibrium"][n], rtol=0, atol=1e-5)
             for n in block_params]
    assert all(close) is same
