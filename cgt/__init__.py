"""cgt — a companion to "Confidence-Gated Training for Efficient Early-Exit Neural Networks" (arXiv 2509.17885).

Two storeys. The ground floor (this folder) is the method: what a reader of the paper opens first and
what a training run's key is computed from. Upstairs, in named subpackages, is the machinery that
evaluates, runs, reports and deploys it. Imports only go down (tests/test_architecture.py keeps it so),
and no upstairs module is part of a run's key, so moving machinery never re-keys a training run.

Ground floor — the method, in the order data flows through it:

    data/          datasets: one record per dataset (base), names → records (registry), the built-in
                   fashion_mnist and indian_pines, your own .npz files and loaders (custom), verified raw
                   files (raw), seeded splitters (splits), the cached tensors a notebook gets (prepared)
    models         early-exit networks: backbone blocks + one head per block; the paper's and generic ones
    policy         the exit rule: score, which way it passes τ, the "never / always exit" thresholds, PAPER_TAU
    learned_policy the learned exit rule (per-exit logistic scores on confidence and agreement features) and
                   the one policy interface: a policy name or a LearnedPolicy
    losses         exit-weighting strategies (HardCGT, SoftCGT, the baselines): per-sample, per-exit weights
    methods        the compared methods: named strategies with options, in display order
    augment        training-batch augmentation of patches (flips, 90° rotations, spectral noise), seeded
    train          TrainConfig and the training loop (seeded, resumable, DDP-aware)
    distributed    data-parallel training under torchrun
    interference   how the exits' gradients conflict on the shared blocks (logged during training on request)
    runs           a run's identity (config, data fingerprint, code version), folder, completeness, loading
    inference      the real early-exit forward pass (deeper blocks only for undecided samples)
    cost           FLOPs per exit (torch's FlopCounterMode, 2 per multiply-add, batch size 1)
    fileio         atomic writes and hashes
    notices        lines a user must see (stderr, even with --quiet): retraining, resuming, data refused

Upstairs — the machinery, floor by floor (each floor imports only the ones below it):

    evaluation/    operating points and what they score: thresholds, metrics, evaluate, calibration, risk,
                   verdicts (the paired rule every comparison follows)
    experiments/   what a notebook asks for: profiles, paths, provenance sidecars, the ablation grids
                   (ablations), the train-and-evaluate API (train_evaluate), the training-recipe search
                   chosen on validation (recipe)
    pipeline/      running it all: the notebooks through papermill (notebooks), which steps can be skipped
                   (stepcache), the training-run runner for local workers or Dask (runner), its scaling
                   (scaling), finished runs trained again and compared bit for bit (reproduce),
                   committed-notebook hygiene (nbtools), the GPU path timed (cuda_check)
    deployment/    a run exported to ONNX and verified whole (onnx_graphs, exported), the pass that runs (chooser),
                   cost in time and latency budgets (timecost, timing), the wall-clock benchmark (bench)
    reporting/     tables over seeds and verdict tables (tables), figures (plots, dataviz, paper_figures),
                   the notebooks' shared views (views), the README's results (readme)

On the roof: cli — `python -m cgt data | split | train | paper | scaling | reproduce | publish | results | export |
bench`.

This file holds the map and no code: training runs are keyed by the source of the modules they
execute (cgt.runs.code_version), and this one is left out of that key.
"""
