"""Benchmarks: one command each, a printed table and a JSON file."""
