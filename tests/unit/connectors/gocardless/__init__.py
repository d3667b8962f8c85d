"""Pure unit tests of the GoCardless connector."""
