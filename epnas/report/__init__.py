"""After a search: the HTML report of a run (plots, the best architectures drawn, a table
of all trials), and export of its networks (:mod:`epnas.report.export`)."""

from epnas.report.html import REPORT_NAME, write_report

__all__ = ["REPORT_NAME", "write_report"]
