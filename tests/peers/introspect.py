"""graphql-core's standard introspection query, every option on, sent to
Herald; the answer must build a client schema. Prints one JSON line: the
GraphQL errors if refused, else what the built schema holds.
Driven by tests/it/contract.rs. Usage: python3 introspect.py URL KEY"""

import json
import sys
import urllib.request

from graphql import build_client_schema, get_introspection_query


def main():
    url, key = sys.argv[1], sys.argv[2]
    query = get_introspection_query(
        descriptions=True,
        specified_by_url=True,
        directive_is_repeatable=True,
        schema_description=True,
        input_value_deprecation=True,
        input_object_one_of=True,
    )
    request = urllib.request.Request(
        url,
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        body = json.load(answer)
    if body.get("errors"):
        print(json.dumps({"errors": body["errors"]}))
        return
    # Raises, failing the run, on an answer that is not a valid schema.
    schema = build_client_schema(body["data"])
    position = schema.type_map.get("Position")
    print(json.dumps({
        "types": len(schema.type_map),
        "position": position.name if position else None,
        "query": schema.query_type.name if schema.query_type else None,
    }))


if __name__ == "__main__":
    main()
