"""Value types several contracts share, and the base of every model on the wire."""

import contextvars
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    WithJsonSchema,
    model_validator,
)


def unstorable(text: str) -> str | None:
    """Why PostgreSQL could not store `text`, or None when it can: a NUL (U+0000), or a lone
    surrogate (U+D800 to U+DFFF, which JSON can write as `\\ud800`): no character, no UTF-8."""
    if "\x00" in text:
        return "text must not contain NUL (U+0000)"
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        return f"text must not contain a lone surrogate (U+{ord(text[exc.start]):04X})"
    return None


class WireModel(BaseModel):
    """Base of every model that crosses a process boundary: an event, a request-reply
    message, an HTTP body. Text that is `unstorable`, anywhere in what the model is made
    from (a field of the model, of a subclass or of a nested model, a key of a mapping, a
    field the model ignores), is a value error naming where it is.

    Checked before anything else, so no other error shows the text as it came: a lone
    surrogate has no UTF-8, and an error answer (FastAPI's 422) showing it would fail to
    encode. A validator, not a pattern, so the JSON Schemas are unchanged. The outermost
    model checks all its data once; the models inside it do not check their parts again."""

    @model_validator(mode="wrap")
    @classmethod
    def _text_is_storable(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if _CHECKED_BY_ENCLOSING_MODEL.get():
            return handler(data)
        if _holds_unstorable(data):
            errors = [
                _value_error(where, why, text) for where, why, text in _unstorable_texts(data)
            ]
            raise ValidationError.from_exception_data(cls.__name__, errors)
        checked = _CHECKED_BY_ENCLOSING_MODEL.set(True)
        try:
            return handler(data)
        finally:
            _CHECKED_BY_ENCLOSING_MODEL.reset(checked)


_CHECKED_BY_ENCLOSING_MODEL = contextvars.ContextVar("checked_by_enclosing_model", default=False)


def _holds_unstorable(data: object) -> bool:
    """Whether plain data holds unstorable text anywhere: the quick pass, which most data,
    being ASCII, goes through without encoding a string."""
    if isinstance(data, str):
        return "\x00" in data or (not data.isascii() and unstorable(data) is not None)
    if isinstance(data, dict):
        for key, value in data.items():
            if _holds_unstorable(key) or _holds_unstorable(value):
                return True
    elif isinstance(data, list | tuple):
        for value in data:
            if _holds_unstorable(value):
                return True
    return False


Where = tuple[object, ...]
"""The keys and indexes that lead to a value in plain data."""


def _unstorable_texts(data: object, where: Where = ()) -> Iterator[tuple[Where, str, str]]:
    """(where, why, text) for each unstorable text in plain data, a mapping's keys included
    (each where its mapping is); a model in the data checked its own when it was made."""
    if isinstance(data, str):
        if why := unstorable(data):
            yield where, why, data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _unstorable_texts(key, where)
            yield from _unstorable_texts(value, (*where, key))
    elif isinstance(data, list | tuple):
        for index, value in enumerate(data):
            yield from _unstorable_texts(value, (*where, index))


def _value_error(where: Where, why: str, text: str) -> Any:
    """The error, its text escaped, and its place too (a key can be the unstorable text)."""
    return {
        "type": "value_error",
        "loc": tuple(step if isinstance(step, int) else _escaped(str(step)) for step in where),
        "input": _escaped(text),
        "ctx": {"error": why},
    }


def _escaped(text: str) -> str:
    """`text` with each lone surrogate as its Python escape, e.g. `\\ud800`."""
    return text.encode(errors="backslashreplace").decode()


Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
MAX_AMOUNT = Decimal("9999999999.99")
"""The most a `Money` or an `Amount` can be: 12 digits, 2 of them cents."""
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code.")]


AMOUNT_PATTERN = r"^\d{1,10}(\.\d{1,2})?$"


def _decimal_string(value: object) -> object:
    """A decimal string as `AMOUNT_PATTERN` writes it, in ASCII digits (`1E+5`, `-0` and an
    Arabic-Indic 3 are Decimals too, but not what a reader of the schema expects), or a
    Decimal from Python."""
    if not isinstance(value, str | Decimal):
        raise ValueError("an amount is a decimal string such as '12.50', never a JSON number")
    if isinstance(value, str) and not re.fullmatch(AMOUNT_PATTERN, value, flags=re.ASCII):
        raise ValueError("an amount is up to 10 digits and 2 after a point, as in '12.50'")
    return value


Amount = Annotated[
    Decimal,
    BeforeValidator(_decimal_string),
    Field(ge=0, max_digits=12, decimal_places=2),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["12.50"]}),
]
"""An exact amount on the wire as a decimal string: floats lose cents."""


class ShippingAddress(WireModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=200)
    line1: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2 code.")
