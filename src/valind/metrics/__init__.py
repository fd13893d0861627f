"""Metrics over generated answers: value expression and crosstalk statistics (``crosstalk``), QA
capability through lm-evaluation-harness (``qa``). Computation rules: docs/metrics.md."""
