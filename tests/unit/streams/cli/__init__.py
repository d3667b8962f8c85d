"""Tests of the ``paybus`` command line (streams/cli), without a broker."""
