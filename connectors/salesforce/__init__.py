"""Salesforce connector: CRM source poller and write-back (see DESIGN.md)."""
