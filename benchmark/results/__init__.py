"""After a run: reading result logs, official scoring, compliance checking, reports and plots."""
