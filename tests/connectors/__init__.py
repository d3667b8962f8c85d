"""Shared connector test machinery (the PSP connector contract suite)."""
