"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis, positive and
negative data, as the admin): no 5xx, every documented response matches its schema, and every 4xx is
problem+json whose 422 names each failing field.
Bounded: a few examples per operation and mode, so the whole run stays well under two minutes."""

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis.errors import Unsatisfiable
from hypothesis import settings as hsettings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

pytestmark = pytest.mark.infra

MAX_EXAMPLES = 8
STREAMS = re.compile(r"/events$")  # SSE never ends by design; resume has its own tests


# Refused by the HTTP server's own parser before the application sees the request (a request line or
# headers past its buffer): its plain answer is all there can be.
SERVER_REFUSALS = {414, 431}


def problem_names_the_field(ctx, response, case) -> None:
    """A 4xx is problem+json; a 422 names the failing field of each error (a body refused whole: `body`)."""
    if not 400 <= response.status_code < 500 or response.status_code in SERVER_REFUSALS:
        return
    ctype = (response.headers.get("content-type") or [""])[0]
    assert ctype.startswith("application/problem+json"), f"{response.status_code} is {ctype!r}: {response.text[:300]}"
    body = response.json()
    assert body.get("status") == response.status_code and body.get("detail"), response.text[:300]
    if response.status_code == 422:
        fields = [e.get("field") for e in body.get("errors") or []]
        assert fields and all(fields), f"422 names no field: {response.text[:300]}"


CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, problem_names_the_field]


def operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    return [op for op in ops if not STREAMS.search(op.path)]


def fuzz(op, mode: GenerationMode, auth: dict) -> list[str]:
    failures: list[str] = []

    @given(case=op.as_strategy(generation_mode=mode))
    @hsettings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def run(case) -> None:
        try:
            case.call_and_validate(headers=auth, checks=CHECKS, timeout=10)
        except (AssertionError, FailureGroup) as exc:
            failures.append(
                f"{op.method.upper()} {op.path} [{mode.value}]: {str(exc)[:1500]}\n  {case.as_curl_command()[:600]}"
            )

    try:
        run()
    except Unsatisfiable:  # nothing invalid can be said to this operation (e.g. only a string path parameter)
        pass
    return failures


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_server_errors_and_responses_match_the_schema(server_url: str, settings, mode: GenerationMode) -> None:
    ops = operations(server_url)
    assert len(ops) >= 40, [op.path for op in ops]
    auth = {"Authorization": f"Bearer {settings.admin_key}"}
    failures = [f for op in ops for f in fuzz(op, mode, auth)]
    assert not failures, "\n\n".join(failures[:15])
