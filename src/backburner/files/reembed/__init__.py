"""Re-embedding a source with another model: estimate, start, progress (`service.py`) and the
worker every instance runs (`worker.py`); the SQL is in `files/store/reembeds.py`."""
