"""Development stand-ins and the embedded stack behind ``paybus dev`` / ``make run``."""
