"""Training: `loop.train_and_evaluate(config, workdir)` is a whole run.

    loop.py            the run top to bottom, and the step loop
    run_setup.py       model, data, state and runner; resume from the workdir
    cadence.py         each step and its cadences: log, checkpoint, evaluation, dev selection
    step.py            the per-device train step (direct or GradCache gradients)
    runner.py          runs the step under pmap or jit(shard_map); state and batch placement
    losses.py          the global in-batch contrastive loss
    optim.py           AdamW, its schedule, weight-decay mask and frozen parameters
    checkpoints.py     what a run writes and reads back: steps, frozen params, the best step
    selection.py       dev-fold scoring for the best step
    guards.py          divergence and preemption
    progress.py        step timing, the log line, metrics held on device until read
    metrics_writer.py  metrics.jsonl and TensorBoard events
    compilation_cache.py  the persistent XLA compilation cache
"""
