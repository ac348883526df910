"""How a size limit is told to a user: the configured number and the setting that sets it."""


def too_large_message(what: str, setting: str, limit_bytes: int) -> str:
    """E.g. `the file is larger than 52,428,800 bytes (50 MiB), the limit set by file_upload_max_bytes`."""
    return (
        f"{what} is larger than {limit_bytes:,} bytes ({limit_bytes / 1024 / 1024:.4g} MiB), "
        f"the limit set by {setting}"
    )
