"""localstripe in process for the tests: the runner lives in :mod:`streams.dev.localstripe`."""

from streams.dev.localstripe import (
    LOCK_PATH,
    LocalStripe,
    LoopThread,
    WebhookReceiver,
    serve,
    start_localstripe,
)

__all__ = [
    "LOCK_PATH",
    "LocalStripe",
    "LoopThread",
    "WebhookReceiver",
    "serve",
    "start_localstripe",
]
