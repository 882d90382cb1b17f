"""The programs the documentation shows, as files the tests import and run (so the pages cannot rot)."""
