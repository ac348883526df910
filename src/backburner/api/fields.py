"""Field types shared by every request body, so that each route applies the same rules."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from backburner.text import check_name

# No control characters, and at least one visible character (a name of Unicode blanks looks
# like no name at all).
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_name)]
# Free text: anything but NUL.
Description = Annotated[str, Field(max_length=2000, pattern=r"^[^\x00]*$")]
