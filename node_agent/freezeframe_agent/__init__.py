"""freezeframe node agent: capture -> rolling segments -> spool -> S3 + segment bus."""

__version__ = "0.1.0"
