// graphql-js's standard introspection query, every option on, sent to
// Herald; the answer must build a client schema. Prints one JSON line:
// the GraphQL errors if refused, else what the built schema holds.
// Driven by tests/it/contract.rs. Usage: node introspect.mjs URL [KEY]
import { buildClientSchema, getIntrospectionQuery } from "graphql";

const [url, key] = process.argv.slice(2);
const query = getIntrospectionQuery({
  descriptions: true,
  specifiedByUrl: true,
  directiveIsRepeatable: true,
  schemaDescription: true,
  inputValueDeprecation: true,
  oneOf: true,
});
const headers = { "content-type": "application/json" };
if (key) headers.authorization = `Bearer ${key}`;
const response = await fetch(url, { method: "POST", headers, body: JSON.stringify({ query }) });
const body = await response.json();
if (body.errors) {
  console.log(JSON.stringify({ errors: body.errors }));
} else {
  // Throws, failing the run, on an answer that is not a valid schema.
  const schema = buildClientSchema(body.data);
  const types = schema.getTypeMap();
  console.log(JSON.stringify({
    types: Object.keys(types).length,
    position: types.Position?.toString() ?? null,
    query: schema.getQueryType()?.name ?? null,
  }));
}
