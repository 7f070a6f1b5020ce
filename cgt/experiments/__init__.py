"""What a notebook asks for: named settings, where things live, and training + evaluation in one call.

    profiles        smoke / quick / paper: named data and training settings
    paths           where runs, prepared data and figures live
    provenance      sidecars: commit, parameters, packages, device, data checksums
    train_evaluate  methods × seeds, trained (cached) and evaluated — the notebook-facing API
    ablations       notebook 06: the grid of gate settings as data, its runs and tables
    floors          the classic floor (SVM, random forest on spectra) on every protocol × fold × seed, as a table
    recipe          the training recipe (patch size, augmentation, regularisation) searched for the reference
                    method and chosen on validation only; the overrides every method then trains with
    recipe_choice   the chosen recipe of a profile's dataset: where it is written, read back, applied to every run
"""
