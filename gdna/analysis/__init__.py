"""Sweep analysis (`gdna analyze`): load.py reads trial runs from MLflow, tables.py the paper's
tables (validation-selected, mean ± spread), plots.py LR-sensitivity figures, importance.py fANOVA,
report.py writes everything to a folder and an `analysis` MLflow run (tests/synthetic_store.py fakes a sweep)."""
