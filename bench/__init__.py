"""Benchmarks: costs measured side by side and reported as tables and ratios, never as tests."""
