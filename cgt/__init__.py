"""cgt — a companion to "Confidence-Gated Training for Efficient Early-Exit Neural Networks" (arXiv 2509.17885).

The modules, in the order data flows through them (each concept lives in exactly one):

    data/          datasets: one record per dataset (base), names → records (registry), the built-in
                   fashion_mnist and indian_pines, your own .npz files and loaders (custom), verified raw
                   files (raw), seeded splitters (splits), the cached tensors a notebook gets (prepared)
    models         early-exit networks: backbone blocks + one head per block; the paper's and generic ones
    policy         the exit rule: score, which way it passes τ, the "never / always exit" thresholds
    losses         exit-weighting strategies (HardCGT, SoftCGT, the baselines): per-sample, per-exit weights
    methods        the compared methods: named strategies with options, in display order
    train          TrainConfig and the training loop (seeded, resumable, DDP-aware)
    distributed    data-parallel training under torchrun
    runs           a run's identity (config, data fingerprint, code version), folder, completeness, loading
    profiles       smoke / quick / paper: named data and training settings
    inference      the real early-exit forward pass (deeper blocks only for undecided samples)
    cost           FLOPs per exit (torch's FlopCounterMode, 2 per multiply-add, batch size 1)
    thresholds     operating points fitted on validation logits; threshold sweeps
    metrics        classification and early-exit metrics
    evaluate       a finished run's metrics at every operating point (incl. matched cost, the budget curve)
    ablations      notebook 06: the grid of gate settings as data, its runs and tables
    interference   how the exits' gradients conflict on the shared blocks (logged during training on request)
    risk           thresholds with a guarantee on the accuracy lost: conformal risk control, Learn then Test
    calibration    per exit: validation-fitted temperature, ECE, how well confidence predicts mistakes
    verdicts       the one rule every comparison follows: paired t intervals, margins fixed in advance
    experiment     what a training notebook does in one call: methods × seeds, trained (cached) and evaluated
    report         tables over seeds, the paper's numbers beside ours, per-class F1, the verdict tables
    readme         the README's results block, from artifacts only
    plots          figures of training and evaluation
    dataviz        figures and tables of the data before training
    display        the notebooks' shared views (tables and figures, one call each)
    paper_figures  notebook 04: every table and figure from the finished runs of a profile
    provenance     sidecars: commit, parameters, packages, device, data checksums
    onnx_graphs    torch early-exit networks → ONNX graphs (per segment, and the whole early-exit pass)
    deploy         a run exported to ONNX; early exit with ONNX Runtime
    bench          wall-clock speed-up of real early exit against its FLOPs prediction
    runner         a pipeline's training runs planned first, then trained by local worker processes or Dask
    scaling        how the runner scales over a machine's cores (`python -m cgt scaling`)
    cuda_check     the GPU path exercised and timed on one machine (`python -m cgt.cuda_check`)
    pipeline       the notebooks in order through papermill (`python -m cgt paper`)
    stepcache      which pipeline steps can be skipped: their inputs and outputs are unchanged
    nbtools        keeping committed notebooks stripped and nbval-checkable
    cli            `python -m cgt data | split | train | paper | scaling | publish | results | export | bench`
    paths, fileio  where things live; atomic writes and hashes

This file holds the map and no code: training runs are keyed by the source of the modules they
execute (cgt.runs.code_version), and this one is left out of that key.
"""
