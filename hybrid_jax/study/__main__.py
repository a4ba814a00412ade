"""The trade-off study's command line (driver.py says what it runs and writes):

    python -m hybrid_jax.study --config configs/tradeoff2.py --workdir W
    python -m hybrid_jax.study --config configs/tradeoff3.py:pilot --workdir W   (pilot.py)
        [--max_runs N] [--only RUN[,RUN...]] [--report_only] [--dry_run] [--publish docs/]
        [--allow_mixed_code] [--config.a.b=...]
"""
from absl import flags

from hybrid_jax import cli
from hybrid_jax.errors import InputError
from hybrid_jax.study import pilot
from hybrid_jax.study.driver import run_experiment

FLAGS = flags.FLAGS
cli.define_config_flags("configs/tradeoff.py")
flags.DEFINE_integer("max_runs", 0, "Train/evaluate at most this many unfinished runs in this "
                     "invocation (0 = all), then write the report on the finished ones.")
flags.DEFINE_list("only", [], "Run only these planned runs (names as --dry_run prints them) "
                  "and write no report: one slice of a grid run in parallel, each slice in its own "
                  "workdir; move the finished runs/<name>/ into one workdir, then --report_only.")
flags.DEFINE_bool("report_only", False, "Run nothing: write the report on the finished runs.")
flags.DEFINE_bool("dry_run", False, "Print the plan (each run and whether it is finished, "
                  "half-done or to do) and stop.")
flags.DEFINE_string("publish", None, "Also copy the report, its figures and data files into "
                    "this directory (e.g. docs/).")
flags.DEFINE_bool("allow_mixed_code", False, "Resume or report on runs made by other code "
                  "than the code about to run (or than each other); each run's "
                  "code_version.json still says which.")


@cli.program
def main(argv):
    del argv
    if FLAGS.config is None:
        raise InputError("--config is required (e.g. --config configs/tradeoff.py)")
    if not FLAGS.workdir:
        raise InputError("--workdir is required")
    if FLAGS.max_runs < 0:
        raise InputError(f"--max_runs: must be >= 0, got {FLAGS.max_runs}")
    # A config with experiment.pilot is a recipe pilot (study/pilot.py), not a grid.
    is_pilot = "experiment" in FLAGS.config and "pilot" in FLAGS.config.experiment
    run = pilot.run_pilot if is_pilot else run_experiment
    run(FLAGS.config, FLAGS.workdir, max_runs=FLAGS.max_runs, report_only=FLAGS.report_only,
        publish=FLAGS.publish, dry_run=FLAGS.dry_run, allow_mixed_code=FLAGS.allow_mixed_code,
        only=FLAGS.only)


if __name__ == "__main__":
    cli.run(main)
