"""ugcwatchd: watched folders in, paid AI-video jobs out."""

__version__ = "0.1.0"
