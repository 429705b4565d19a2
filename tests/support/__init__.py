"""Shared helpers for the test suite (database servers, fixtures).

Nothing in here is a test; trial finds no ``TestCase`` classes in this package.
"""
