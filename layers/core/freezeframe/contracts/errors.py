"""Errors of freezeframe. Handlers turn them into 4xx replies or retries by class."""


class FreezeframeError(Exception):
    """Base of every error that freezeframe raises on purpose."""


class ConfigError(FreezeframeError):
    """A setting is missing or malformed."""


class PayloadError(FreezeframeError):
    """An inbound payload (webhook body, event) is malformed; maps to HTTP 400."""


class SignatureError(FreezeframeError):
    """A signature or token did not verify; maps to HTTP 401."""


class WindowError(FreezeframeError):
    """A freeze window is empty, inverted or out of range."""


class SegmentCorruptError(FreezeframeError):
    """A segment's bytes do not match its recorded sha256, or cannot be decoded."""


class CaptureFormatError(FreezeframeError):
    """A capture file is not pcap/pcapng or its header is malformed."""


class StackError(FreezeframeError):
    """The local stack (Kafka, S3 endpoint, gateway) could not be started or reached."""


class NotFoundError(FreezeframeError):
    """A requested incident, manifest or object does not exist."""


class CustodyError(FreezeframeError):
    """The signed custody chain of an incident is missing, broken or does not name what was read."""


class ObjectLockError(FreezeframeError):
    """A version could not be locked at least as strongly as requested (not a refusal a re-read resolves)."""


class FreezeFailedError(FreezeframeError):
    """A freeze failed after its last attempt; its incident records the terminal state "failed"."""


class DeadlineExceeded(FreezeframeError):
    """A function's own deadline passed before its work finished (`contracts.deadline`): raised short of the Lambda
    timeout, so the function can still record the failure that the timeout itself would have left unrecorded."""
