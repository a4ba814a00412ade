"""The statistics of every comparison of runs, in one place: `paired` (query-level bootstrap,
randomisation test, Holm), `seeds` (the two-level seed-and-question bootstrap, TOST, verdicts),
`design` (variance components and the seeds or questions a precision needs), `power` (power and
seed pairs of a paired-by-seed comparison from a pilot), `trend` (the dose-response slope test),
`simulate` (scores of arms sharing seeds, for checking all of these) and `tables` (per-query
tables to aligned paired arrays). The compare CLI and the study use these only."""
