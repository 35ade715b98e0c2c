"""``rliv sweep CONFIG.yaml``: Ray Tune sweeps of RLIV-UA and SL-MGAC, tracked in MLflow.

    config.py     the sweep YAML as a frozen, self-validating dataclass (pure Python)
    space.py      search dimensions -> Ray Tune; the data-changing settings of a trial
    data.py       the world and the sample builds, cached on disk by their settings
    evaluate.py   what a trial reports (an evaluation, never a loss) and the truth after it
    trainable.py  the Tune function trainable: train, export, evaluate, report
    tracking.py   MLflow: a parent run per sweep, a child run per trial (warns once if down)
    callbacks.py  Tune callbacks in the driver: trial reports -> child runs, progress lines
    report.py     the summary table, the regret of the estimator's pick, the plots
    run.py        the whole sweep: data, Tune (or its restore), truth, summary, MLflow
"""
