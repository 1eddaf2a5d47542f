"""Local tooling: the `freezeframe` CLI, the demo, the MCP server, the bundled sample and its context, and
the local stack (enforcing S3, Kafka, Trino, the gateway that stands in for API Gateway, Lambda and the
dissection state machine). Never shipped in a Lambda layer; imports the core, never the reverse."""
