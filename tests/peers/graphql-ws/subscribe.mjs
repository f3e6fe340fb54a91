// Drives Herald's subscriptions with the graphql-ws client, for
// tests/it/subscriptions.rs. Usage: node subscribe.mjs WS_URL API_KEY
// Prints one JSON line per step on stdout; the Rust test reacts to them.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, apiKey] = process.argv.slice(2);
const say = (step, data = {}) => console.log(JSON.stringify({ step, ...data }));
const fail = (error) => {
  say('error', { message: String(error?.message ?? JSON.stringify(error)) });
  process.exit(1);
};
setTimeout(() => fail(new Error('timed out')), 30_000).unref();

const client = createClient({ url, webSocketImpl: WebSocket, connectionParams: { apiKey }, retryAttempts: 0 });

// First whatever notification of this tenant changes next: the test sends one now.
const first = client.iterate({ query: 'subscription { notificationsUpdated { notificationId type status } }' });
const firstNext = first.next();
setTimeout(() => say('listening'), 300);
const { value: created } = await firstNext.catch(fail);
if (created.errors) fail(created.errors[0]);
const id = created.data.notificationsUpdated.notificationId;
say('created', created.data.notificationsUpdated);
await first.return();

// Then that one notification: the test cancels it.
const updates = client.iterate({
  query: 'subscription($id: ID!) { notificationUpdated(id: $id) { notificationId type status position } }',
  variables: { id },
});
const updateNext = updates.next();
setTimeout(() => say('watching', { id }), 300);
const { value: update } = await updateNext.catch(fail);
if (update.errors) fail(update.errors[0]);
say('updated', update.data.notificationUpdated);
await updates.return();
await client.dispose();
say('done');
