"""GoCardless connector: maps GoCardless payments, mandates and refunds onto paybus."""
