"""Shared state: one small async interface per kind, memory and Redis implementations."""
