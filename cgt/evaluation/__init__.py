"""Operating points and what they score, from a finished run's cached logits.

    thresholds     operating points fitted on validation logits; threshold sweeps
    metrics        classification and early-exit metrics
    evaluate       a finished run's metrics at every operating point (incl. matched cost, the budget curve)
    calibration    per exit: validation-fitted temperature, ECE, how well confidence predicts mistakes
    risk           thresholds with a guarantee on the accuracy lost: conformal risk control, Learn then Test
    learned_policy the learned exit policy fitted on validation, compared with thresholds at the same budgets
    floor          the classic floor: RBF SVM and random forest on per-pixel spectra, on a network's pixels
    verdicts       the one rule every comparison follows: paired t intervals, margins fixed in advance
    primary        the pre-registered analysis: comparator chosen on validation, matched realised cost,
                   paired class-stratified bootstrap, Holm over the whole family
"""
