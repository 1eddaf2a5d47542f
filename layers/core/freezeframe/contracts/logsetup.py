"""One logging set-up for the functions and the CLI.

The core logs with the stdlib (`logging.getLogger("freezeframe.<module>")`); the functions log with the powertools
Logger. In Lambda the core's lines must read like the handler's: the same JSON formatter with the keys the handler
appends (incident_id, node, the Lambda context) and the same level. `function_logger()` builds the handler's Logger
and routes the "freezeframe" logger, the parent of every core logger (including those of modules imported later),
through its handler. Outside Lambda (the CLI, the demo running the handlers in-process) stdout carries only a
command's output: every log line goes to stderr, which Lambda sends to CloudWatch exactly like stdout.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

CORE_LOGGER = "freezeframe"  # the parent of every core module's logger
CLI_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def function_logger() -> Logger:
    """The powertools Logger of a function (service and level from POWERTOOLS_SERVICE_NAME / POWERTOOLS_LOG_LEVEL),
    with the core's loggers writing through its handler, formatter and level. (powertools is loaded here, by the
    functions: the CLI's logging does without its 30 ms import.)"""
    from aws_lambda_powertools import Logger  # noqa: PLC0415
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers  # noqa: PLC0415

    logger = Logger(stream=sys.stderr)
    logging.getLogger(CORE_LOGGER)  # registered, so that copy_config finds it before any core module logs
    # A Logger whose service is "freezeframe" (the local stack, the tests) already is the core's parent logger;
    # copy_config leaves its own logger alone, and the core's lines reach it by propagation.
    copy_config_to_registered_loggers(source_logger=logger, include={CORE_LOGGER})
    return logger


def cli_logging(verbose: bool) -> None:
    """The CLI's logging: plain lines on stderr (stdout carries only the command's output), INFO with -v."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr, format=CLI_FORMAT)
