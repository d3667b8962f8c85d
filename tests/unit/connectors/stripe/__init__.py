"""Pure unit tests of the Stripe connector."""
