"""Billing: credits, the run gate, settlement and usage (the ledger)."""
