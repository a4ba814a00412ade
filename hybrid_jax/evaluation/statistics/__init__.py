"""The statistics of every comparison of runs, in one place: `paired` (query-level bootstrap,
randomisation test, Holm), `seeds` (the two-level seed-and-question bootstrap, TOST, verdicts),
`design` (variance components and the seeds or questions a precision needs) and `tables`
(per-query tables to aligned paired arrays). The compare CLI and the study use these only."""
