"""Operating points and what they score, from a finished run's cached logits.

    thresholds     operating points fitted on validation logits; threshold sweeps
    metrics        classification and early-exit metrics
    evaluate       a finished run's metrics at every operating point (incl. matched cost, the budget curve)
    calibration    per exit: validation-fitted temperature, ECE, how well confidence predicts mistakes
    risk           thresholds with a guarantee on the accuracy lost: conformal risk control, Learn then Test
    floor          the classic floor: RBF SVM and random forest on per-pixel spectra, on a network's pixels
    verdicts       the one rule every comparison follows: paired t intervals, margins fixed in advance
"""
