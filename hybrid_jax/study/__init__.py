"""The trade-off study: does hybrid training trade away accuracy on high-resource languages?

    python -m hybrid_jax.study --config configs/tradeoff3.py --workdir W   (__main__.py)

    plan.py          the grid: runs, their order and training configs
    driver.py        runs the unfinished runs (resumable) and writes the report
    grid_checks.py   what existing runs must agree with (config, code, registered protocol)
    runs.py          a finished run's evaluations, curve and timing
    pooled.py        the first edition's analysis: seeds pooled per query, one bootstrap level
    seeded.py        the second edition's analysis: registered families, two-level bootstrap
    third.py         the third edition's: seed-paired families, power reached, dose-response,
                     arms; third_grids.py reads its sibling workdirs and the pilot's tables
    pilot.py         the recipe pilot (dev data only); pilot_table.py, pilot_power.py its tables
    report.py        one report for every edition: data files, figures, markdown, publish
    editions.py      what differs between editions, as data
    sections_*.py    the markdown sections; figures_*.py the figures; markdown.py, paper.py
Statistics live in hybrid_jax/evaluation/statistics/ (shared with the compare CLI).
"""
