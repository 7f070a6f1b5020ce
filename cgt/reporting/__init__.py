"""Tables, figures and pages, from finished runs and the artifacts they wrote.

    tables         tables over seeds, the paper's numbers beside ours, per-class F1, the verdict tables
    plots          figures of training and evaluation
    dataviz        figures and tables of the data before training
    views          the notebooks' shared views (tables and figures, one call each)
    paper_figures  notebook 04: every table and figure from the finished runs of a profile
    primary_tables the pre-registered verdicts (cgt.evaluation.primary) of a profile's runs, as tables
    results_pages  the results pages (results/*.md): every detailed table once, from artifacts only
    readme         the README's answer block: the verdicts, one headline table per dataset and protocol
    site           the results site (`make site`, MkDocs hooks): results pages, executed notebooks, local MathJax
"""
