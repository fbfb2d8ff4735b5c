"""Errors the analysis raises on bad input; each message names the problem and the fix."""


class AnalysisError(ValueError):
    """Base class: the input cannot give a trustworthy number."""


class DataError(AnalysisError):
    """The table is missing columns, holds invalid values or mixes metric protocols."""


class FitError(AnalysisError):
    """A law cannot be fitted to the points given."""
