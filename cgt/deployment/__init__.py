"""A finished run as a deployable model, and how fast it really is.

    onnx_graphs    torch early-exit networks → ONNX graphs (per segment, and the whole early-exit pass)
    exported       a run exported to ONNX and verified whole (`export_run`, `verify`); early exit with ONNX Runtime (`load`)
    chooser        which pass runs (one graph, segments, the plain network): the fastest measured, ties to the plain network
    plans          which exits to keep: a left-out exit's blocks merged into the next segment, the plan chosen on validation
    timecost       cost in time: the per-exit time model, thresholds fitted to a µs budget, accuracy-vs-latency curves
    timing         repeated and interleaved timings on a shared machine
    bench          wall-clock speed-up of real early exit against its FLOPs and time-model predictions
"""
