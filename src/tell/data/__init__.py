"""The data side of TELL: load and normalise records, anchor them, count tokens, budget, mix, shuffle."""
