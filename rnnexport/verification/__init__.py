"""Verification: cases × runners against an oracle → one report; the verdict judges it once."""
