"""The only modules that talk to the network: S3, the segment bus (Kafka or a file) and Lambda invocation."""
