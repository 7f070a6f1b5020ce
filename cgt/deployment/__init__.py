"""A finished run as a deployable model, and how fast it really is.

    onnx_graphs    torch early-exit networks → ONNX graphs (per segment, and the whole early-exit pass)
    exported       a run exported to ONNX (`export_run`); early exit with ONNX Runtime (`load`)
    bench          wall-clock speed-up of real early exit against its FLOPs prediction
"""
