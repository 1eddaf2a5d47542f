"""Investigation: the SQL engines (Athena, Trino, DuckDB), the Glue catalog, KFL filters, the scenarios,
the report, PCAP export and recording jobs.
"""
