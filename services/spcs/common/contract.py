"""Each RPC's request contract, declared once at the head of its handler.

    @rpc(ids=("pool.pool_uuid",), required=("volume",), sizes=("new_size_bytes",),
         one_of=(("volume.path", "volume.uuid"),), holds="ResizeVolume")
    def ResizeVolume(self, request, context): ...

`rpc` checks the request before the handler runs — a missing or malformed field is
INVALID_ARGUMENT naming it, before any lookup, lock or job — and records the declaration on the
handler, where the contract tests read it (`declared`), so the tests and the checks cannot
drift apart. Fields are dotted paths; `name[*].field` means the field of every element of a
repeated field (and at least one element). What a declaration names:

- `required`: set (non-empty string or list, non-zero number, present message);
- `ids`: required, and a CloudStack id (`validate.identifier`);
- `sizes`: required, and a volume size (> 0, a multiple of 512, at most the maximum);
- `one_of`: groups of which at least one field is set ("the volume needs a path or a uuid"),
  checked when the message holding them is present (so a group per member of a oneof works);
- `id_of`: groups of alternatives for one id (`destination.uuid`, else `source.uuid`): the
  first that is set must be an id, and one must be set;
- `chosen`: messages whose (single) oneof must be set ("object must be a volume or ...");
- `key`: the idempotency key — a replay with the same key is answered, not repeated. It is
  required and checked as an id (`operation_id` as an operation id);
- `holds`: the `spcs.common.holds.HOLDS` entries the RPC takes while it runs (the keys are the
  objects it resolves, so the domain takes them through `KeyedLocks.hold(<that entry>, ...)`).
  Taking an entry the handler did not declare fails the call (`holds.Undeclared`), so a
  declaration cannot fall behind the code. Such a handler may read records unconfirmed (its
  lease confirms them, `spcs.common.unconfirmed`), so it must not change anything before it
  holds what it changes: it runs again when a record it read had changed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.message import Message

from spcs.common import errors, unconfirmed, validate
from spcs.common.holds import DECLARED, HOLDS
from spcs.common.operations import operation_name

F = TypeVar("F", bound=Callable[..., Any])
ATTRIBUTE = "__spcs_contract__"


@dataclass(frozen=True)
class Contract:
    required: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    chosen: tuple[str, ...] = ()
    id_of: tuple[tuple[str, ...], ...] = ()
    key: str = ""
    holds: tuple[str, ...] = ()

    @property
    def must_be_set(self) -> tuple[str, ...]:
        """Every field without which the request is INVALID_ARGUMENT, in checking order."""
        key = (self.key,) if self.key else ()
        return (*key, *self.required, *self.ids, *self.sizes)

    def check(self, request: Message) -> None:
        for dotted in self.must_be_set:
            for path, value in _values(request, dotted):
                if not _is_set(value):
                    raise errors.InvalidArgument(f"{path} is required")
        self._check_forms(request)
        for dotted in self.chosen:
            _check_chosen(request, dotted)
        for group in self.one_of:
            _check_one_of(request, group)
        for group in self.id_of:
            _check_id_of(request, group)

    def _check_forms(self, request: Message) -> None:
        """The fields that are set have the form they must have (ids, sizes)."""
        if self.key:
            _check_key(request, self.key)
        for dotted in self.ids:
            for path, value in _values(request, dotted):
                validate.identifier(str(value), path)
        for dotted in self.sizes:
            for path, value in _values(request, dotted):
                validate.size(int(value), path)  # type: ignore[call-overload]


def rpc(
    *,
    required: tuple[str, ...] = (),
    ids: tuple[str, ...] = (),
    sizes: tuple[str, ...] = (),
    one_of: tuple[tuple[str, ...], ...] = (),
    chosen: tuple[str, ...] = (),
    id_of: tuple[tuple[str, ...], ...] = (),
    key: str = "",
    holds: str | tuple[str, ...] = (),
    stream: bool = False,
) -> Callable[[F], F]:
    """Declare a handler's contract and check it on every call. `stream`: the handler takes a
    stream of requests, and the contract is the first message's (checked when it is read)."""
    entries = (holds,) if isinstance(holds, str) else holds
    unknown = [entry for entry in entries if entry not in HOLDS]
    if unknown:
        raise KeyError(f"holds {unknown} are not entries of spcs.common.holds.HOLDS")
    contract = Contract(required, ids, sizes, one_of, chosen, id_of, key, entries)

    def decorate(handler: F) -> F:
        @functools.wraps(handler)
        def checked(self: object, request: Any, context: object) -> Any:
            if stream:
                request = _first_checked(request, contract)
            else:
                contract.check(request)
            token = DECLARED.set(contract.holds)
            try:
                if not contract.holds:
                    return handler(self, request, context)
                # what it read unconfirmed is confirmed by its lease (`spcs.common.unconfirmed`)
                return unconfirmed.run(lambda: handler(self, request, context), handler.__name__)
            finally:
                DECLARED.reset(token)

        setattr(checked, ATTRIBUTE, contract)
        return checked  # type: ignore[return-value]

    return decorate


def _first_checked(requests: Iterable[Message], contract: Contract) -> Iterator[Message]:
    """The stream, its first message checked against the contract as it is read."""
    first = True
    for request in requests:
        if first:
            contract.check(request)
            first = False
        yield request


def declared(servicer: type) -> dict[str, Contract]:
    """The contracts of a servicer class's handlers, by method name."""
    found: dict[str, Contract] = {}
    for name in dir(servicer):
        contract = getattr(getattr(servicer, name, None), ATTRIBUTE, None)
        if isinstance(contract, Contract):
            found[name] = contract
    return found


# ---- field access -------------------------------------------------------------------------


def _values(message: Message, dotted: str) -> Iterator[tuple[str, object]]:
    """(path, value) of the field; a `[*]` part yields each element (its path indexed)."""
    head, star, rest = dotted.partition("[*].")
    if not star:
        yield dotted, validate.field_value(message, dotted)
        return
    items = validate.field_value(message, head)
    if not _is_set(items):
        yield head, items
        return
    assert isinstance(items, Iterable), f"{head} is not a repeated field"
    for index, item in enumerate(items):
        assert isinstance(item, Message), f"{head}[*] is not a message field"
        for path, value in _values(item, rest):
            yield f"{head}[{index}].{path}", value


def _is_set(value: object) -> bool:
    if value is None or value == "" or value == 0:
        return False
    if isinstance(value, (str, Message)):
        return True
    return not hasattr(value, "__len__") or bool(len(value))


def _check_key(request: Message, key: str) -> None:
    value = str(validate.field_value(request, key))
    if key == "operation_id":
        operation_name(value)  # the operation's own rules (its name is operations/<id>)
    else:
        validate.identifier(value, key)


def _check_chosen(request: Message, dotted: str) -> None:
    value = validate.field_value(request, dotted)
    if not isinstance(value, Message):
        raise errors.InvalidArgument(f"{dotted} is required")
    (oneof,) = value.DESCRIPTOR.oneofs
    if value.WhichOneof(oneof.name) is None:
        *others, last = [f"a {field.name}" for field in oneof.fields]
        raise errors.InvalidArgument(f"{dotted} must be {', '.join(others)} or {last}")


def _check_one_of(request: Message, group: tuple[str, ...]) -> None:
    *parents, _ = group[0].split(".")
    if parents and validate.field_value(request, ".".join(parents)) is None:
        return  # the message is absent (another member of its oneof is set)
    for dotted in group:
        if all(_is_set(value) for _, value in _values(request, dotted)):
            return
    what = ".".join(parents) or "the request"
    names = " or ".join(field.rsplit(".", 1)[-1] for field in group)
    raise errors.InvalidArgument(f"{what} needs a {names}")


def _check_id_of(request: Message, group: tuple[str, ...]) -> None:
    for dotted in group:
        value = validate.field_value(request, dotted)
        if _is_set(value):
            validate.identifier(str(value), dotted)
            return
    raise errors.InvalidArgument(f"{' or '.join(group)} is required")
