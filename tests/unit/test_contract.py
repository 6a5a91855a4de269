"""The JSON Schema is the contract: valid, used by the code, and met by generated events."""

from __future__ import annotations

import gzip
import json

import jsonschema
import pytest

from microseg.contract import event_contract, load_schema
from microseg.generate import EVENT_TYPES, PAGE_TYPES


def test_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(load_schema())


def test_contract_is_compiled_from_the_schema() -> None:
    contract = event_contract()
    schema = load_schema()
    assert contract.column_names == list(schema["properties"])
    assert list(contract.event_types) == schema["properties"]["event_type"]["enum"]
    assert contract.required == ("event_id", "event_type", "event_at")
    assert contract.identity_any_of == ("anonymous_id", "user_id")
    scroll = next(p for p in contract.numeric_properties if p.name == "scroll_percent")
    assert (scroll.minimum, scroll.maximum) == (0, 100)


def test_generator_speaks_the_contract_taxonomy() -> None:
    contract = event_contract()
    assert set(EVENT_TYPES) == set(contract.event_types)
    assert set(PAGE_TYPES) == set(contract.field("page_type").enum or ())


def test_generated_events_validate_against_the_schema(small_dataset) -> None:
    validator = jsonschema.Draft202012Validator(load_schema())
    first_file = sorted(small_dataset.glob("events_*.jsonl.gz"))[0]
    valid = invalid = 0
    with gzip.open(first_file, "rt", encoding="utf-8") as handle:
        for line in handle:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                invalid += 1
                continue
            # drop explicit nulls the way "optional" means in the contract
            event = {k: v for k, v in event.items() if v is not None}
            if validator.is_valid(event):
                valid += 1
            else:
                invalid += 1
    assert valid > 1000
    # the planted junk: broken JSON, missing ids, unknown type, empty id (bad time needs the
    # format checker, so it validates here and is caught by the ingestion instead)
    assert invalid == 4


@pytest.mark.parametrize(
    ("event", "valid"),
    [
        (
            {
                "event_id": "1",
                "event_type": "click",
                "event_at": "2026-01-01T00:00:00Z",
                "user_id": "u",
            },
            True,
        ),
        ({"event_id": "1", "event_type": "click", "event_at": "2026-01-01T00:00:00Z"}, False),
        (
            {
                "event_id": "1",
                "event_type": "clack",
                "event_at": "2026-01-01T00:00:00Z",
                "user_id": "u",
            },
            False,
        ),
        (
            {
                "event_id": "1",
                "event_type": "scroll",
                "event_at": "2026-01-01T00:00:00Z",
                "user_id": "u",
                "properties": {"scroll_percent": 101},
            },
            False,
        ),
    ],
)
def test_schema_rules(event: dict, valid: bool) -> None:
    assert jsonschema.Draft202012Validator(load_schema()).is_valid(event) is valid
