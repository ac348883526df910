"""Search over a source's passages: vector, lexical (the database's full-text index) and both fused."""
