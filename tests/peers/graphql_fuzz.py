#!/usr/bin/env python3
"""A bounded schema fuzz of Herald's GraphQL API with hypothesis-graphql:
operations Herald did not write, generated from `schema.graphql`.

    graphql_fuzz.py --url http://127.0.0.1:PORT --key KEY --count 300
                    [--schema schema.graphql] [--seed 14]

Generates `count` operations, half queries and half mutations (random
arguments: huge ints, control characters and NUL in strings, empty lists,
nulls), posts each to `/graphql` with the key and records every answer that
is HTTP 5xx, no answer at all, or an error whose `extensions.code` is
`INTERNAL`. Then checks `/ready`. Exits 1 with each such operation and its
answer, 0 otherwise. Generation is seeded and uses no example database, so a
run is the same on every machine for the same schema.
"""

import argparse
import http.client
import json
import sys
import urllib.error
import urllib.request

import graphql
import hypothesis_graphql
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st
from hypothesis_graphql import nodes

# What one answer may take; a debug build can be slow on a wide mutation.
TIMEOUT_SECONDS = 30
# Enough of an answer to show what went wrong.
SHOWN_ANSWER_CHARS = 2000


def json_values():
    """GraphQL literals for the JSON scalar: any JSON value."""
    scalars = st.one_of(
        st.just(nodes.Null),
        st.booleans().map(nodes.Boolean),
        st.integers().map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        st.text().map(nodes.String),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4).map(nodes.List),
            st.dictionaries(
                st.from_regex(r"\A[_A-Za-z][_0-9A-Za-z]{0,10}\Z"), children, max_size=4
            ).map(
                lambda fields: nodes.Object(
                    [
                        graphql.ObjectFieldNode(name=graphql.NameNode(value=name), value=value)
                        for name, value in fields.items()
                    ]
                )
            ),
        ),
        max_leaves=8,
    )


# Seed data, so that generated operations also reach past "not found":
# one of each thing a tenant owns. Every URL is a closed loopback port.
SEED = [
    """mutation {
  publishTemplate(input: {key: "welcome", defaultLocale: "en",
    variables: [{name: "name", type: STRING, required: false}],
    locales: [{locale: "en", email: {subject: "Hi {{name}}", text: "Hello {{name}}",
      html: "<p>Hello {{name}}</p>"}, sms: {text: "Hi {{name}}"},
      push: {title: "Hi", body: "Hi {{name}}"}, ntfy: {title: "Hi", body: "Hi {{name}}"},
      inApp: {title: "Hi", body: "Hi {{name}}"}, webhook: {event: "hi", name: "{{name}}"}}]}) { key }
  upsertTemplatePartial(name: "footer", body: "Bye") { name }
  upsertRecipient(input: {id: "alice", email: "alice@example.com", phone: "+15555550100",
    locale: "en", timezone: "Europe/Paris", segment: "beta", attributes: {plan: "pro"}}) { id }
  addSuppression(address: "bounced@example.com", channel: EMAIL, reason: MANUAL) { address }
}""",
    """mutation {
  sendNotification(input: {recipient: {id: "alice", email: "alice@example.com"},
    channels: [EMAIL, IN_APP], template: {key: "welcome", variables: {name: "Alice"}},
    category: "news", tags: ["seed"], attachments: []}) { notification { id } }
  later: sendNotification(input: {recipient: {id: "alice", email: "alice@example.com"},
    channels: [EMAIL], content: {title: "Later", text: "Later"},
    scheduleAt: "2099-01-01T00:00:00Z", tags: [], attachments: []}) { notification { id } }
  createCampaign(input: {name: "Seed", template: {key: "welcome"}, channel: "email",
    scheduleAt: "2099-01-01T00:00:00Z", progressSteps: [50]}) { campaign { id } }
  createSchedule(input: {name: "Seed", cron: "0 9 * * *", timezone: "Europe/Paris",
    missedPolicy: SKIP, notification: {recipient: {id: "alice"}, channels: [IN_APP],
    template: {key: "welcome"}, tags: [], attachments: []}}) { id }
  createWebhookEndpoint(input: {url: "http://127.0.0.1:9/hook", eventTypes: []}) { endpoint { id } }
  createShortLink(url: "http://127.0.0.1:9/landing") { code }
}""",
    """{
  notifications(first: 5) { pageInfo { endCursor } edges { cursor node { id } } }
  inappFeed(recipientId: "alice", first: 5) { pageInfo { endCursor } edges { node { id } } }
  campaigns(first: 1) { pageInfo { endCursor } }
  schedules(first: 1) { pageInfo { endCursor } }
  templates(first: 1) { pageInfo { endCursor } }
  suppressions(first: 1) { pageInfo { endCursor } }
  projections { name }
}""",
]

# Strings a tenant might send on purpose, edge cases included.
PLAUSIBLE_STRINGS = [
    "", " ", "alice", "welcome", "footer", "news", "en", "fr-CA", "email", "sms", "in_app",
    "Europe/Paris", "UTC", "Mars/Olympus", "0 9 * * *", "*/5 * * * *", "61 * * * *",
    "* * * * * * *", "22:00", "07:00", "24:00", "25:61", "alice@example.com",
    "bounced@example.com", "+15555550100", "http://127.0.0.1:9/hook", "notification",
    "campaign", "schedule", "notification.sent", "{{name}}", "{{#each name}}{{this}}",
    "{{> footer}}", "{{", "%", "_", "-1", "9" * 40, "1e309", "NaN", "\u0000", "x" * 5000,
]


def seed_values(answers):
    """Every string in the seed answers' `data`: ids, keys, cursors, codes."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            for child in value.values():
                walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)
        elif isinstance(value, str):
            found.add(value)

    for data in answers:
        walk(data)
    return sorted(found)


def custom_scalars(seeded):
    """Strategies for the scalars: the seed's values and plausible strings
    part of the time, any text (NUL and control characters too) else."""
    known = st.sampled_from(seeded + PLAUSIBLE_STRINGS)
    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]))
    datetimes = st.datetimes(timezones=st.timezones()).map(lambda moment: moment.isoformat())
    edge_ints = st.sampled_from([0, -1, 1, 100, 101, 2**31 - 1, -(2**31), 2**53, 2**63, 10**30])
    return {
        # A NUL inside an otherwise plausible value reaches past the checks
        # that refuse the value itself (PostgreSQL refuses NUL in text).
        "String": st.one_of(known, known.map(lambda s: s[:1] + "\0" + s[1:]), text).map(nodes.String),
        "ID": st.one_of(known, st.uuids().map(str), text).map(nodes.String),
        # Past 32 bits an Int must be refused as invalid input, not crash.
        "Int": st.one_of(st.integers(-(2**31), 2**31 - 1), edge_ints).map(nodes.Int),
        "DateTime": st.one_of(datetimes, known, text).map(nodes.String),
        # A log position is a string of digits; an Int is accepted too.
        "Position": st.one_of(
            st.one_of(st.integers(-(2**64), 2**64).map(str), known, text).map(nodes.String),
            edge_ints.map(nodes.Int),
        ),
        "JSON": json_values(),
        # A multipart upload cannot be inlined; a literal must be refused cleanly.
        "Upload": text.map(nodes.String),
    }


def answer_of(request):
    """(HTTP status, or None when there was no answer, and the answer's text)."""
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    except (OSError, http.client.HTTPException) as error:
        return None, f"no answer: {error!r}"


def post(url, key, body):
    return answer_of(
        urllib.request.Request(
            url,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
    )


def failure(status, text):
    """Why this answer is a failure, or None."""
    if status is None:
        return text
    if status >= 500:
        return f"HTTP {status}"
    try:
        errors = json.loads(text).get("errors") or []
    except (ValueError, AttributeError):
        return None
    for error in errors:
        if (error.get("extensions") or {}).get("code") == "INTERNAL":
            path = ".".join(str(step) for step in error.get("path") or [])
            return f"INTERNAL at {path or 'the operation'}: {error.get('message')}"
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--schema", default="schema.graphql")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    with open(args.schema, encoding="utf-8") as file:
        schema = file.read()
    graphql_url = args.url.rstrip("/") + "/graphql"
    posted = {"query": 0, "mutation": 0}
    failures = []

    def send(operation):
        """Posts `operation`, records it if its answer is a failure, and
        returns the answer's `data`."""
        status, text = post(graphql_url, args.key, {"query": operation})
        reason = failure(status, text)
        if reason is not None:
            failures.append((reason, operation, text))
        try:
            return json.loads(text).get("data")
        except (ValueError, AttributeError):
            return None

    scalars = custom_scalars(seed_values(send(operation) for operation in SEED))

    def run(kind, strategy, count):
        # A fixed seed rather than `derandomize`: the same operations in CI
        # and here, and another sample when --seed changes.
        @seed(args.seed)
        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            # Every example is posted and judged here; no shrinking, so a
            # failure is reported as generated and the run stays bounded.
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(operation=strategy)
        def fuzz(operation):
            send(operation)
            posted[kind] += 1

        fuzz()

    half = (args.count + 1) // 2
    run("query", hypothesis_graphql.queries(schema, custom_scalars=scalars), half)
    run("mutation", hypothesis_graphql.mutations(schema, custom_scalars=scalars), half)

    ready_status, ready_text = answer_of(args.url.rstrip("/") + "/ready")
    total = sum(posted.values())
    print(
        f"graphql fuzz: {total} operations ({posted['query']} queries, "
        f"{posted['mutation']} mutations), {len(failures)} failures, "
        f"/ready {ready_status}"
    )
    for reason, operation, text in failures:
        print(f"\n=== {reason}\n--- operation\n{operation}\n--- answer\n{text[:SHOWN_ANSWER_CHARS]}")
    if ready_status != 200:
        print(f"\n=== /ready answered {ready_status}: {ready_text[:SHOWN_ANSWER_CHARS]}")
    if total < args.count:
        print(f"\n=== only {total} of {args.count} operations were generated")
    sys.exit(1 if failures or ready_status != 200 or total < args.count else 0)


if __name__ == "__main__":
    main()
