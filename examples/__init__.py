"""The Python snippets README.md shows, as files the tests import and run (so the README cannot rot)."""
