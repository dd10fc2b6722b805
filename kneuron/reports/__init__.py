"""Figures and reports (markdown + self-contained HTML) of the paper's experiments."""

from kneuron.reports.report import Report, write_config

__all__ = ["Report", "write_config"]
