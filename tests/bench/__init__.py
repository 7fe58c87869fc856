"""tornstore benchmarks: `python -m tests.bench [--quick] [--json] [--only SECTION]` (see __main__)."""
