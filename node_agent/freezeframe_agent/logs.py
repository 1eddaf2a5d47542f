"""Structured JSON logs: one object per line on stdout, through the same powertools formatter as the functions.

The agent's modules log with the stdlib `logging` and structured `extra` keys (node, segment, seq, stage, ...);
this formatter puts those keys into the JSON object next to level, message, timestamp, service, cluster and node.
"""

from __future__ import annotations

import logging
import sys

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

SERVICE = "freezeframe-agent"


def configure_logging(cluster: str, node: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LambdaPowertoolsFormatter(service=SERVICE, cluster=cluster, node=node))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python logs every failed reconnect; the upload stage already reports an outage once per attempt.
    logging.getLogger("kafka").setLevel(logging.ERROR)
