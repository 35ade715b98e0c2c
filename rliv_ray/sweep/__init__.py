"""``rliv sweep CONFIG.yaml``: Ray Tune sweeps of RLIV-UA and SL-MGAC, tracked in MLflow.

    config.py     the sweep YAML as a frozen, self-validating dataclass (pure Python)
    space.py      the planned trials (same config, same trials); a trial's data and fields
    data.py       the world and the sample builds, cached on disk by their settings
    evaluate.py   what a trial reports (off-policy estimates, never a loss) and the truth
    records.py    each trial's JSON record: what --resume reads, and all it reads
    trainable.py  the Tune function trainable: train, export, evaluate, report
    tracking.py   MLflow: a parent run per sweep, a child run per trial (warns once if down)
    callbacks.py  Tune callbacks in the driver: records, child runs, progress lines
    report.py     the summary table, the regret of each estimator's pick, the plots
    run.py        the whole sweep: data, Tune (the unfinished trials), truth, summary, MLflow
"""
