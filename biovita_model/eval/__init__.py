"""BioVITA-Bench evaluation of a run, one job per module.

- `subsets` — which subsets to score and their tables (`find_benches`, `load_subset`,
  `load_bench`), `default_dataset`, `drop_missing`.
- `media` — `PublishedMedia`: a bench's items found by (source, record_id) in a published folder.
- `scoring` — Top-k per subset, level and direction (`evaluate_bench`, grouped and dense scorers),
  ties in expectation, `merge_reports`, `write_report`.
- `run` — `evaluate_run`: a run's model embeds each subset, scores it, writes eval.json/csv/png.
- `tables` — `eval_table`: a report as Rich tables.
- `plot` — `plot_results`: eval.png.
"""
