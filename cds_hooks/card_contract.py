"""The card contract, checked on a response's JSON: what :mod:`cds_hooks.models` says, at JSON pointers.

The models in :mod:`cds_hooks.models` are the contract (each element's type and the rules between
elements); this module validates JSON with them, strictly (``"yes"`` is not a boolean, ``5`` not a
string), adds the wire form's one rule (no null or empty value anywhere,
:func:`~cds_hooks.models.empty_members`) and says what is wrong as ``"<JSON pointer>: <problem>"``
lines, for a service to drop or replace a card before it leaves and to say why in its audit trail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from cds_hooks.models import Action, Card, empty_members

__all__ = ["action_problems", "card_problems"]


def card_problems(card: object) -> list[str]:
    """Everything that makes ``card`` (JSON) break the CDS Hooks card contract (empty when it is fine)."""
    if not isinstance(card, Mapping):
        return ["/: a card must be a JSON object"]
    return [*empty_members(card), *_model_problems(Card, card, "")]


def action_problems(action: object, pointer: str) -> Iterator[str]:
    """What makes ``action`` (JSON, e.g. a ``systemActions`` item at ``pointer``) break the contract."""
    if not isinstance(action, Mapping):
        yield f"{pointer}: not an object"
        return
    yield from _model_problems(Action, action, pointer)


def _model_problems(model: type[BaseModel], value: Mapping[str, Any], pointer: str) -> Iterator[str]:
    try:
        model.model_validate(value, strict=True)
    except ValidationError as error:
        for problem in error.errors(include_url=False):
            parts = [str(part) for part in problem["loc"]]
            at = (problem.get("ctx") or {}).get("at")
            if at:
                parts.append(str(at))
            where = pointer + "".join(f"/{part}" for part in parts)
            yield f"{where}: {str(problem['msg']).removeprefix('Value error, ')}"
