"""The process pool that runs parsing and other CPU-bound work, each task killable on its own."""
