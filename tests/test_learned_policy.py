"""The learned exit policy (cgt.learned_policy, cgt.evaluation.learned_policy): features and scores by hand,
the fit on validation, the budgets it picks, bad input, and the real early-exit pass taking exactly the
decisions that evaluation from cached logits takes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from cgt.cost import ExitCosts
from cgt.evaluation.evaluate import EvalConfig, evaluate_logits
from cgt.evaluation.learned_policy import (
    compare_policies,
    exit_differences,
    exit_targets,
    feature_table,
    fit_learned_policy,
)
from cgt.evaluation.thresholds import candidates
from cgt.inference import early_exit_forward, exits_from_logits
from cgt.learned_policy import FEATURES, LearnedPolicy, check_exit_policy, exit_features
from cgt.train import predict_logits

pytestmark = pytest.mark.usefixtures("one_thread")


def logits_of(probs) -> torch.Tensor:
    """Logits whose softmax is `probs` (log-probabilities)."""
    return torch.tensor(probs, dtype=torch.float32).log()


def big_onehot(labels, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(labels), k).float() * 20


# ---------------------------------------------------------------- features and scores by hand
def test_exit_features_by_hand():
    """max prob, top-1 − top-2, H/ln K, agreement with the exit before, count of earlier exits agreeing."""
    probs = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [1 / 3, 1 / 3, 1 / 3 + 1e-6]]
    logits = logits_of(probs)
    earlier = torch.tensor([[0, 2, 0],    # exit 0's predictions
                            [1, 2, 2]])   # exit 1's (the one right before)
    f = exit_features(logits, earlier)
    assert f.dtype == torch.float64 and f.shape == (3, len(FEATURES))
    h = -sum(p * math.log(p) for p in probs[0]) / math.log(3)
    np.testing.assert_allclose(f[0].numpy(), [0.7, 0.5, h, 0.0, 1.0], atol=1e-6)  # pred 0: exit 1 says 1, exit 0 says 0
    np.testing.assert_allclose(f[1, :2].numpy(), [0.6, 0.3], atol=1e-6)
    assert f[1, 3:].tolist() == [1.0, 2.0]                                          # pred 2: both agree
    np.testing.assert_allclose(f[2, :3].numpy(), [1 / 3, 0.0, 1.0], atol=1e-5)      # (almost) uniform
    assert f[2, 3:].tolist() == [1.0, 1.0]                                          # pred 2: exit 1 agrees, exit 0 not
    # at the first exit there is no earlier exit: both agreement features are 0
    assert exit_features(logits, torch.empty(0, 3, dtype=torch.long))[:, 3:].eq(0).all()


def test_score_is_the_sigmoid_of_the_linear_model_on_the_raw_features():
    policy = LearnedPolicy(np.array([[2.0, 0, 0, 0, 0], [0, 1.0, 0, 3.0, -1.0]]), np.array([-1.0, 0.5]))
    logits = torch.stack([logits_of([[0.7, 0.2, 0.1]]), logits_of([[0.6, 0.3, 0.1]]), logits_of([[0.1, 0.1, 0.8]])])
    s = policy.scores(logits)  # (E − 1, N) = (2, 1)
    sig = lambda z: 1 / (1 + math.exp(-z))
    assert s[0, 0].item() == pytest.approx(sig(2 * 0.7 - 1))
    assert s[1, 0].item() == pytest.approx(sig(0.3 + 3 * 1 - 1 * 1 + 0.5), abs=1e-6)  # exit 1 agrees with exit 0
    assert policy.num_exits == 3


def test_exit_targets_by_hand():
    """'correct': the exit's argmax is the label; 'agrees_with_last': it is the last exit's argmax."""
    logits = torch.stack([big_onehot([0, 1, 2], 3), big_onehot([0, 2, 2], 3), big_onehot([1, 2, 0], 3)])
    y = torch.tensor([0, 2, 0])
    assert exit_targets(logits, y, "correct").tolist() == [[True, False, False], [True, True, False]]
    assert exit_targets(logits, y, "agrees_with_last").tolist() == [[False, False, False], [False, True, False]]


# ---------------------------------------------------------------- fitting on validation
def synthetic(n: int = 400, k: int = 4, seed: int = 0):
    """3 exits whose confidence tracks correctness: sharper logits on the right class more often."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    exits = []
    for e, acc in enumerate((0.6, 0.75, 0.9)):
        right = torch.rand(n, generator=g) < acc
        cls = torch.where(right, y, (y + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k)
        sharp = torch.where(right, 3.0, 1.0) + torch.rand(n, generator=g) * 2
        exits.append(torch.randn(n, k, generator=g) * 0.5 + torch.nn.functional.one_hot(cls, k) * sharp[:, None])
    return torch.stack(exits), y


def test_fit_folds_the_standardisation_into_raw_coefficients():
    """The stored raw-feature coefficients give sklearn's own probabilities on standardised features."""
    logits, y = synthetic()
    policy = fit_learned_policy(logits, y)
    preds = logits.argmax(-1)
    for e in range(2):
        x = exit_features(logits[e], preds[:e]).numpy()
        t = exit_targets(logits, y)[e]
        mean, std = x.mean(0), np.where(x.std(0) > 0, x.std(0), 1.0)
        want = LogisticRegression(max_iter=1000).fit((x - mean) / std, t).predict_proba((x - mean) / std)[:, 1]
        np.testing.assert_allclose(policy.scores(logits)[e].numpy(), want, atol=1e-8)
    assert (policy.coef[0, 3:] == 0).all()  # exit 1 has no earlier exit: its agreement features are constant 0
    # a useful score: right exits score higher than wrong ones on average
    s, right = policy.scores(logits).numpy(), exit_targets(logits, y)
    assert all(s[e][right[e]].mean() > s[e][~right[e]].mean() for e in range(2))


def test_a_constant_target_gives_the_clipped_base_rate():
    """An exit that is always right (or never) on validation scores every sample with its (clipped) rate."""
    logits, y = synthetic()
    logits[0] = big_onehot(y.tolist(), 4)  # exit 1 always right
    policy = fit_learned_policy(logits, y)
    assert (policy.coef[0] == 0).all() and policy.scores(logits)[0].eq(policy.scores(logits)[0, 0]).all()
    assert policy.scores(logits)[0, 0].item() == pytest.approx(1 - 1e-6)


def test_validation_without_some_classes_fits_and_says_which_it_saw():
    """Features ignore class identity: a validation split missing class 3 fits, records the classes it
    held, and the policy scores test samples of class 3 like any others."""
    logits, y = synthetic()
    keep = y != 3
    policy = fit_learned_policy(logits[:, keep], y[keep])
    assert policy.classes_seen == (0, 1, 2)
    test_logits, y_test = synthetic(seed=1)
    preds, exits = exits_from_logits(test_logits, [0.5, 0.5], policy)
    assert len(preds) == len(y_test) and (y_test == 3).any()


# ---------------------------------------------------------------- budgets picked on validation
HAND_COSTS = ExitCosts((1, 1), (0, 0))  # cumulative (1, 2), full network 2 → relative cost (0.5, 1.0)


def hand_two_exits():
    """Exit 1 of 4 samples: by max prob s0 > s1 > s2 > s3, by margin s0 > s2 > s3 > s1; s0, s2 right.
    The last exit is right on all four."""
    exit1 = logits_of([[0.9, 0.05, 0.05], [0.5, 0.49, 0.01], [0.4, 0.3, 0.3], [0.35, 0.33, 0.32]])
    y = torch.tensor([0, 1, 0, 2])
    return torch.stack([exit1, big_onehot(y.tolist(), 3)]), y


def test_budget_thresholds_by_hand():
    """Budget 0.75: at least half the samples must leave at exit 1. Max-softmax can only take a prefix of
    s0, s1, s2, s3: best accuracy 3/4, cheapest at 3 out (cost 0.625). A policy scoring the margin takes
    s0, s2 out (cost 0.75): accuracy 4/4. Budget 0.3 is below exit 1's cost: 'not reachable' rows."""
    logits, y = hand_two_exits()
    margin_only = LearnedPolicy(np.array([[0.0, 10.0, 0, 0, 0]]), np.array([-0.5]))
    rows = compare_policies(logits, y, logits, y, HAND_COSTS, 3, budgets=(0.3, 0.75), learned=margin_only)
    by = rows.set_index(["policy", "budget"])
    assert by.loc[("threshold", 0.75), "accuracy"] == 0.75 and by.loc[("threshold", 0.75), "avg_cost_relative"] == 0.625
    assert by.loc[("threshold", 0.75), "exit1_pct"] == 75.0
    assert by.loc[("learned", 0.75), "accuracy"] == 1.0 and by.loc[("learned", 0.75), "avg_cost_relative"] == 0.75
    assert by.loc[("learned", 0.75), "objective_met"]
    for policy in ("threshold", "learned"):
        row = by.loc[(policy, 0.3)]
        assert not row["objective_met"] and row["thresholds"] is None and math.isnan(row["accuracy"])
        assert row["how"] == "not reachable: budget 0.3 is below exit 1's relative cost 0.5000"
    assert list(rows["operating_point"]) == ["val_budget_30", "val_budget_75"] * 2


def test_threshold_rows_are_evaluates_val_budget_points():
    """The threshold rows repeat evaluate_logits' val_budget_* points (same candidates, same pick)."""
    logits, y = synthetic(300)
    test_logits, y_test = synthetic(300, seed=1)
    costs = ExitCosts((100, 200, 300), (10, 10, 10))
    points = evaluate_logits(logits, y, test_logits, y_test, costs, 4, EvalConfig())["operating_points"]
    rows = compare_policies(logits, y, test_logits, y_test, costs, 4).set_index(["policy", "operating_point"])
    for name in ("val_budget_30", "val_budget_40", "val_budget_50"):
        for col in ("accuracy", "f1_macro", "avg_cost_relative"):
            assert rows.loc[("threshold", name), col] == points[name]["test"][col]
        assert rows.loc[("threshold", name), "thresholds"] == points[name]["thresholds"]
        learned = rows.loc[("learned", name)]
        assert learned["val_relative_cost"] <= float(name[-2:]) / 100 + 1e-9


def test_feature_table_shows_features_scores_and_targets():
    logits, y = synthetic(50)
    policy = fit_learned_policy(logits, y)
    t = feature_table(logits, y, policy)
    assert len(t) == 2 * 50 and list(t.columns[:2]) == ["exit", "sample"]
    assert set(FEATURES) <= set(t.columns) and {"learned_score", "correct", "agrees_with_last"} <= set(t.columns)
    np.testing.assert_allclose(t[t.exit == 2].learned_score, policy.scores(logits)[1].numpy())


def test_arrays_and_round_trip():
    """What an export must carry: feature names, (E − 1, F) weights, (E − 1,) biases; to_dict/from_dict round-trip."""
    logits, y = synthetic(100)
    policy = fit_learned_policy(logits, y, target="agrees_with_last")
    a = policy.arrays()
    assert a["features"] == list(FEATURES) and a["coef"].shape == (2, 5) and a["intercept"].shape == (2,)
    again = LearnedPolicy.from_dict(policy.to_dict())
    assert torch.equal(again.scores(logits), policy.scores(logits)) and again.target == "agrees_with_last"


# ---------------------------------------------------------------- bad input
def test_a_policy_for_another_number_of_exits_is_refused_naming_both():
    logits, y = synthetic(60)
    policy = fit_learned_policy(logits, y)
    four = torch.cat([logits, logits[-1:]])
    match = r"fitted for a 3-exit model; these features come from a 4-exit model"
    with pytest.raises(ValueError, match=match):
        exits_from_logits(four, 0.5, policy)
    with pytest.raises(ValueError, match=match):
        candidates(four, y, ExitCosts((1, 1, 1, 1), (1, 1, 1, 1)), policy)
    with pytest.raises(ValueError, match=match):
        check_exit_policy(policy, 4)


@pytest.mark.parametrize("kwargs, match", [
    ({"target": "agrees"}, r"unknown target 'agrees'; valid choices: \['correct', 'agrees_with_last'\]"),
    ({"c": 0.0}, r"c=0.0 must be > 0"),
])
def test_fit_bad_options(kwargs, match):
    logits, y = synthetic(40)
    with pytest.raises(ValueError, match=match):
        fit_learned_policy(logits, y, **kwargs)


def test_fit_bad_labels():
    logits, y = synthetic(40)
    with pytest.raises(ValueError, match=r"validation labels have shape \(39,\); the logits hold 40 samples"):
        fit_learned_policy(logits, y[:39])
    with pytest.raises(ValueError, match=r"validation labels span 0 … 7; the logits have 4 classes"):
        fit_learned_policy(logits, torch.where(y == 1, 7, y))


def test_compare_bad_budgets_and_mismatched_exits():
    logits, y = synthetic(40)
    costs = ExitCosts((1, 1, 1), (1, 1, 1))
    with pytest.raises(ValueError, match=r"budgets \[0.0\] must be > 0"):
        compare_policies(logits, y, logits, y, costs, 4, budgets=(0.0, 0.5))
    with pytest.raises(ValueError, match=r"validation logits have 3 exits, test logits 2, the costs 3"):
        compare_policies(logits, y, logits[1:], y, costs, 4)


def test_an_unknown_policy_object_is_refused():
    with pytest.raises(ValueError, match=r"a name in \['max_softmax', 'entropy'\] or a LearnedPolicy; got 0.5"):
        check_exit_policy(0.5, 3)


# ---------------------------------------------------------------- equivalence on a trained network
@pytest.fixture(scope="module")
def trained(fashion_mnist_run):
    run, data = fashion_mnist_run
    x, y = data.x["val"], data.y["val"]
    logits = predict_logits(run.model, x)
    return {"model": run.model, "x": x, "y": y, "logits": logits, "policy": fit_learned_policy(logits, y)}


def gap_threshold(scores: np.ndarray, q: float) -> float:
    """A float32 threshold near the q-quantile of `scores`, in the widest gap between neighbouring scores
    there (so float noise between the two passes cannot decide)."""
    s = np.unique(scores)
    k = int(q * len(s))
    window = range(max(k - 30, 0), min(k + 30, len(s) - 1))
    best = max(window, key=lambda i: s[i + 1] - s[i])
    return float(np.float32((s[best] + s[best + 1]) / 2))


def with_agreement_weight(policy: LearnedPolicy, weight: float) -> LearnedPolicy:
    """The policy with exit 2's weight on agrees_previous set by hand (the fitted one may be small)."""
    coef = policy.coef.copy()
    coef[1, FEATURES.index("agrees_previous")] = weight
    return LearnedPolicy(coef, policy.intercept, policy.target, policy.classes_seen)


@pytest.mark.parametrize("agreement", [None, 3.0], ids=["fitted", "agreement-heavy"])
@pytest.mark.parametrize("batch_size", [1, 64])
def test_early_exit_forward_with_the_learned_policy_equals_evaluation_from_logits(trained, batch_size, agreement):
    """The real pass (deeper blocks only for undecided samples, agreement from the exits each sample
    passed) takes the same exits and predictions as exits_from_logits on the cached logits — for the
    fitted policy, and for one whose exit-2 decisions hinge on the agreement with exit 1."""
    policy, logits = trained["policy"], trained["logits"]
    if agreement is not None:
        policy = with_agreement_weight(policy, agreement)
    s = policy.scores(logits).numpy()
    taus = [gap_threshold(s[0], 0.5), gap_threshold(s[1], 0.4)]
    assert all(np.abs(s[e] - taus[e]).min() > 1e-6 for e in range(2))  # precondition: no score on a threshold
    want_preds, want_exits = exits_from_logits(logits, taus, policy)
    assert (torch.bincount(want_exits, minlength=3) > 0).all()  # every exit takes samples
    if agreement is not None:  # the agreement feature really decides some samples here
        assert not torch.equal(want_exits, exits_from_logits(logits, taus, with_agreement_weight(policy, 0.0))[1])
    out = early_exit_forward(trained["model"], trained["x"], taus, policy, batch_size=batch_size)
    assert torch.equal(out.exit_index, want_exits) and torch.equal(out.predictions, want_preds)


def test_the_learned_policy_is_refused_before_any_block_runs(trained):
    model = trained["model"]
    seen = [0]
    handle = model.blocks[0].register_forward_hook(lambda *a: seen.__setitem__(0, seen[0] + 1))
    two_exit = LearnedPolicy(np.zeros((1, 5)), np.zeros(1))
    try:
        with pytest.raises(ValueError, match=r"fitted for a 2-exit model; these features come from a 3-exit model"):
            early_exit_forward(model, trained["x"], 0.5, two_exit)
    finally:
        handle.remove()
    assert seen == [0]


def test_exit_differences_by_hand():
    """On the hand case at budget 0.75: max-softmax sends s0, s1, s2 out at exit 1 (s1 wrong there), the
    margin policy s0 and s2, keeping s1 for exit 2 (right); s3 goes on in both. Only s1 is listed."""
    logits, y = hand_two_exits()
    margin_only = LearnedPolicy(np.array([[0.0, 10.0, 0, 0, 0]]), np.array([-0.5]))
    rows = compare_policies(logits, y, logits, y, HAND_COSTS, 3, budgets=(0.75,), learned=margin_only)
    taus = rows.set_index("policy")["thresholds"]
    d = exit_differences(logits, y, taus["threshold"], taus["learned"], margin_only)
    assert d["sample"].tolist() == [1] and d["threshold_exit"].tolist() == [1] and d["learned_exit"].tolist() == [2]
    assert d["threshold_right"].tolist() == [False] and d["learned_right"].tolist() == [True]
    assert d["max_prob_at_first"].iloc[0] == pytest.approx(0.5, abs=1e-6)
    assert d["margin_at_first"].iloc[0] == pytest.approx(0.01, abs=1e-6)


def test_risk_control_accepts_the_learned_policy():
    """gap_losses under a learned policy = 'early exit wrong where the last is right' at exits_from_logits'
    decisions, per global λ; CRC then certifies a λ on validation as for max-softmax."""
    from cgt.evaluation.risk import conservative_first, gap_losses, risk_controlled_threshold

    logits, y = synthetic(300)
    policy = fit_learned_policy(logits, y, target="agrees_with_last")
    grid = conservative_first(policy, n=20)
    assert grid[0] == 1.0 and (np.diff(grid) < 0).all()  # learned scores leave when high: 1 is "never exit"
    losses = gap_losses(logits, y, grid, policy)
    last_right = logits[-1].argmax(-1) == y
    for j in (0, 7, 19):
        preds, _ = exits_from_logits(logits, float(grid[j]), policy)
        np.testing.assert_array_equal(losses[:, j], ((preds != y) & last_right).numpy().astype(float))
    lam = risk_controlled_threshold(logits, y, "crc", 0.05, policy=policy)
    assert lam in conservative_first(policy) and 0.0 <= lam < 1.0
    with pytest.raises(ValueError, match=r"fitted for a 3-exit model; these features come from a 2-exit model"):
        gap_losses(logits[1:], y, grid, policy)
