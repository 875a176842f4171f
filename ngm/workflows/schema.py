"""What every operation's input model shares: unknown fields refused, and partial updates where sending
null for a required field is an error naming it rather than a silent clear."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def reject_null(*fields: str):
    """A validator for a partial-update model: these fields may be left out, not set to null."""

    def check(cls, value):
        if value is None:
            raise ValueError("must not be null")
        return value

    return field_validator(*fields, mode="before")(classmethod(check))
