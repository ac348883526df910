"""`backburner demo`: the product at work in a minute, on the embedded default."""
