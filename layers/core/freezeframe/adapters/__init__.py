"""The only modules that talk to the network, each behind a small typed interface (a typing.Protocol of the
operations freezeframe uses) with its boto3 or client-library implementation: the object store (s3), the segment
bus (bus: Kafka or a file), the catalog (catalog: Glue), Athena (athena), the dispatcher (invoke: Lambda Invoke and
Step Functions), secrets (secrets: Secrets Manager), signing (kms, local_signer), time-stamping (tsa), Kafka
authentication (kafka_auth), the PagerDuty REST API (pagerduty_api), the evidence bucket as a pyarrow filesystem for
the local SQL engine (arrow_fs) and the Trino server (trino). tests/unit/test_house_rules.py fails when a core module
outside this package calls a boto3 client or opens another network path (pyarrow's S3 filesystem, urllib.request,
http.client, a socket connection, the trino client, DuckDB's httpfs or s3_ settings)."""
