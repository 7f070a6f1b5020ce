"""Running the whole paper: notebooks in order, training runs on workers, what can be skipped.

    notebooks      the notebooks in order through papermill (`python -m cgt paper`), and their publication
    mathjax        the math renderer of the published pages, copied beside them from a pinned package (no CDN)
    stepcache      which pipeline steps can be skipped: their inputs and outputs are unchanged
    runner         a pipeline's training runs planned first, then trained by local worker processes or Dask
    scaling        how the runner scales over a machine's cores (`python -m cgt scaling`)
    reproduce      finished runs trained again from nothing and compared bit for bit (`python -m cgt reproduce`)
    nbtools        keeping committed notebooks stripped and nbval-checkable
    cuda_check     the GPU path exercised and timed on one machine (`python -m cgt.pipeline.cuda_check`)
"""
