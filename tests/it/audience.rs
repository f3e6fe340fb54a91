//! Integration tests: audience. Recipients, preferences and the tenant's
//! quiet hours through GraphQL, and the lookups the dispatcher makes.

use herald::commands::Actor;
use herald::commands::recipients::{self, Audience};
use herald::domain::quiet_hours::QuietHours;
use herald::domain::recipient::{PreferenceChange, PreferenceSource};
use herald::domain::values::{Category, Channel, RecipientId, TenantId};
use serde_json::{Value, json};

use crate::support::{TestApp, data, error_codes};

const UPSERT: &str = r#"mutation($input: UpsertRecipientInput!) {
  upsertRecipient(input: $input) { id hasProfile email phone locale timezone segment attributes quietHours { start end } }
}"#;
const RECIPIENT: &str = r#"query($id: String!) {
  recipient(id: $id) {
    id hasProfile email phone pushTarget webhookUrl ntfyTopic locale timezone segment attributes
    quietHours { start end }
    preferences { category channel optedIn source changedAt }
  }
}"#;
const SET_PREFERENCES: &str = r#"mutation($id: String!, $changes: [PreferenceChangeInput!]!) {
  setPreferences(recipientId: $id, changes: $changes) { id hasProfile preferences { category channel optedIn source } }
}"#;
const QUIET_HOURS: &str = "{ quietHours { start end } }";
const SET_QUIET_HOURS: &str = "mutation($start: String!, $end: String!) { setQuietHours(start: $start, end: $end) { start end } }";
const CLEAR_QUIET_HOURS: &str = "mutation { clearQuietHours }";

struct Tenant {
    app: TestApp,
    id: TenantId,
    key: String,
}

impl Tenant {
    async fn start() -> Tenant {
        let app = TestApp::start().await;
        let (id, key) = app.tenant().await;
        Tenant {
            id: TenantId::parse(&id).unwrap(),
            app,
            key,
        }
    }

    async fn graphql(&self, query: &str, variables: Value) -> Value {
        data(self.app.graphql(Some(&self.key), query, variables).await)
    }

    async fn audience(&self, id: &str) -> Option<Audience> {
        let id = RecipientId::parse(id).unwrap();
        recipients::audiences(self.app.store.pool(), &self.id, std::slice::from_ref(&id))
            .await
            .unwrap()
            .remove(&id)
    }
}

/// The `path`s of a VALIDATION error's fields.
fn field_paths(response: &Value) -> Vec<String> {
    assert_eq!(error_codes(response), ["VALIDATION"], "{response}");
    response["errors"][0]["extensions"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["path"].as_str().unwrap().to_string())
        .collect()
}

fn full_profile() -> Value {
    json!({
        "id": "user-42",
        "email": "ada@example.com",
        "phone": "+33612345678",
        "pushTarget": "fcm:APA91bH-x_y",
        "webhookUrl": "https://hooks.example.com/ada",
        "ntfyTopic": "ada_alerts",
        "locale": "fr-CA",
        "timezone": "Europe/Paris",
        "segment": "premium",
        "attributes": { "plan": "pro", "seats": 3 },
        "quietHours": { "start": "22:00", "end": "07:00" },
    })
}

#[tokio::test]
async fn upsert_then_read_the_profile_and_replace_it() {
    let tenant = Tenant::start().await;
    let upserted = tenant
        .graphql(UPSERT, json!({ "input": full_profile() }))
        .await;
    assert_eq!(upserted["upsertRecipient"]["email"], "ada@example.com");

    let read = tenant.graphql(RECIPIENT, json!({ "id": "user-42" })).await;
    let recipient = &read["recipient"];
    assert_eq!(recipient["hasProfile"], true);
    assert_eq!(recipient["phone"], "+33612345678");
    assert_eq!(recipient["pushTarget"], "fcm:APA91bH-x_y");
    assert_eq!(recipient["webhookUrl"], "https://hooks.example.com/ada");
    assert_eq!(recipient["ntfyTopic"], "ada_alerts");
    assert_eq!(recipient["locale"], "fr-CA");
    assert_eq!(recipient["timezone"], "Europe/Paris");
    assert_eq!(recipient["segment"], "premium");
    assert_eq!(
        recipient["attributes"],
        json!({ "plan": "pro", "seats": 3 })
    );
    assert_eq!(
        recipient["quietHours"],
        json!({ "start": "22:00", "end": "07:00" })
    );
    assert_eq!(recipient["preferences"], json!([]));

    // The dispatcher's view agrees.
    let audience = tenant.audience("user-42").await.unwrap();
    let profile = audience.profile.unwrap();
    assert_eq!(profile.timezone.unwrap().as_str(), "Europe/Paris");
    assert_eq!(
        profile.quiet_hours,
        Some(QuietHours::parse("22:00", "07:00").unwrap())
    );

    // An upsert replaces the whole profile: what it leaves out is cleared.
    let input = json!({ "id": "user-42", "email": "ada@example.org", "locale": "fr" });
    tenant.graphql(UPSERT, json!({ "input": input })).await;
    let read = tenant.graphql(RECIPIENT, json!({ "id": "user-42" })).await;
    assert_eq!(read["recipient"]["email"], "ada@example.org");
    assert_eq!(read["recipient"]["phone"], Value::Null);
    assert_eq!(read["recipient"]["quietHours"], Value::Null);

    // The same profile again records nothing.
    let stream = recipients::stream_id(&tenant.id, &RecipientId::parse("user-42").unwrap());
    let before = tenant
        .app
        .store
        .read_stream(&stream, 1)
        .await
        .unwrap()
        .len();
    tenant.graphql(UPSERT, json!({ "input": input })).await;
    let after = tenant
        .app
        .store
        .read_stream(&stream, 1)
        .await
        .unwrap()
        .len();
    assert_eq!((before, after), (2, 2));
}

#[tokio::test]
async fn preferences_follow_the_most_specific_rule() {
    let tenant = Tenant::start().await;
    tenant
        .graphql(UPSERT, json!({ "input": full_profile() }))
        .await;
    let changes = json!([
        { "category": null, "channel": null, "optedIn": false },
        { "channel": "EMAIL", "optedIn": true },
        { "category": "billing", "optedIn": true },
        { "category": "billing", "channel": "SMS", "optedIn": false },
    ]);
    let set = tenant
        .graphql(
            SET_PREFERENCES,
            json!({ "id": "user-42", "changes": changes }),
        )
        .await;
    let rules = set["setPreferences"]["preferences"].as_array().unwrap();
    assert_eq!(rules.len(), 4, "{set}");
    assert!(rules.iter().all(|rule| rule["source"] == "API"));
    assert_eq!(set["setPreferences"]["hasProfile"], true);

    let preferences = tenant.audience("user-42").await.unwrap().preferences;
    let billing = Category::parse("billing").unwrap();
    let marketing = Category::parse("marketing").unwrap();
    assert!(
        !preferences.allows(Some(&billing), Channel::Sms),
        "(billing, sms)"
    );
    assert!(
        preferences.allows(Some(&billing), Channel::Push),
        "(billing, *)"
    );
    assert!(
        preferences.allows(Some(&marketing), Channel::Email),
        "(*, email)"
    );
    assert!(
        !preferences.allows(Some(&marketing), Channel::Push),
        "(*, *)"
    );
    assert!(!preferences.allows(None, Channel::Sms), "(*, *)");

    let read = tenant.graphql(RECIPIENT, json!({ "id": "user-42" })).await;
    assert_eq!(
        read["recipient"]["preferences"].as_array().unwrap().len(),
        4
    );

    // Opting back in replaces the rule; repeating it records nothing.
    let back_in = json!([{ "category": "billing", "channel": "SMS", "optedIn": true }]);
    tenant
        .graphql(
            SET_PREFERENCES,
            json!({ "id": "user-42", "changes": back_in }),
        )
        .await;
    tenant
        .graphql(
            SET_PREFERENCES,
            json!({ "id": "user-42", "changes": back_in }),
        )
        .await;
    let preferences = tenant.audience("user-42").await.unwrap().preferences;
    assert!(preferences.allows(Some(&billing), Channel::Sms));
    let stream = recipients::stream_id(&tenant.id, &RecipientId::parse("user-42").unwrap());
    let events = tenant.app.store.read_stream(&stream, 1).await.unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "RecipientUpserted",
            "RecipientPreferenceChanged",
            "RecipientPreferenceChanged",
            "RecipientPreferenceChanged",
            "RecipientPreferenceChanged",
            "RecipientPreferenceChanged",
        ]
    );
}

#[tokio::test]
async fn an_unsubscribe_before_any_profile_is_kept_with_its_source() {
    let tenant = Tenant::start().await;
    let id = RecipientId::parse("sent-by-id-only").unwrap();
    let preferences = recipients::set_preferences(
        &tenant.app.store,
        &tenant.id,
        &id,
        vec![PreferenceChange {
            category: Some(Category::parse("newsletter").unwrap()),
            channel: Some(Channel::Email),
            opted_in: false,
        }],
        PreferenceSource::Unsubscribe,
        &Actor::new("unsubscribe-link"),
    )
    .await
    .unwrap();
    let newsletter = Category::parse("newsletter").unwrap();
    assert!(!preferences.allows(Some(&newsletter), Channel::Email));
    assert!(preferences.allows(Some(&newsletter), Channel::Push));

    let read = tenant
        .graphql(RECIPIENT, json!({ "id": "sent-by-id-only" }))
        .await;
    let recipient = &read["recipient"];
    assert_eq!(recipient["hasProfile"], false);
    assert_eq!(recipient["email"], Value::Null);
    assert_eq!(recipient["preferences"][0]["source"], "UNSUBSCRIBE");
    assert_eq!(recipient["preferences"][0]["category"], "newsletter");
    assert_eq!(recipient["preferences"][0]["channel"], "EMAIL");
    assert_eq!(recipient["preferences"][0]["optedIn"], false);

    // A profile upserted later keeps the preference.
    let input = json!({ "id": "sent-by-id-only", "email": "bob@example.com" });
    tenant.graphql(UPSERT, json!({ "input": input })).await;
    let audience = tenant.audience("sent-by-id-only").await.unwrap();
    assert!(audience.profile.is_some());
    assert!(
        !audience
            .preferences
            .allows(Some(&newsletter), Channel::Email)
    );
    assert_eq!(
        recipients::profile(tenant.app.store.pool(), &tenant.id, &id)
            .await
            .unwrap()
            .and_then(|profile| profile.email)
            .map(|email| email.to_string()),
        Some("bob@example.com".to_string())
    );
}

#[tokio::test]
async fn audiences_are_read_in_one_batch_and_unknown_ids_are_absent() {
    let tenant = Tenant::start().await;
    for id in ["a", "b"] {
        let input = json!({ "id": id, "email": format!("{id}@example.com") });
        tenant.graphql(UPSERT, json!({ "input": input })).await;
    }
    let ids: Vec<RecipientId> = ["a", "b", "nobody"]
        .iter()
        .map(|id| RecipientId::parse(id).unwrap())
        .collect();
    let found = recipients::audiences(tenant.app.store.pool(), &tenant.id, &ids)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.contains_key(&ids[0]) && found.contains_key(&ids[1]));
    assert!(!found.contains_key(&ids[2]));
}

#[tokio::test]
async fn tenant_quiet_hours_are_set_read_and_cleared() {
    let tenant = Tenant::start().await;
    let pool = tenant.app.store.pool();
    assert_eq!(
        tenant.graphql(QUIET_HOURS, json!({})).await["quietHours"],
        Value::Null
    );
    assert_eq!(
        recipients::tenant_quiet_hours(pool, &tenant.id)
            .await
            .unwrap(),
        None
    );

    let set = tenant
        .graphql(SET_QUIET_HOURS, json!({ "start": "21:30", "end": "08:00" }))
        .await;
    assert_eq!(
        set["setQuietHours"],
        json!({ "start": "21:30", "end": "08:00" })
    );
    assert_eq!(
        tenant.graphql(QUIET_HOURS, json!({})).await["quietHours"],
        json!({ "start": "21:30", "end": "08:00" })
    );
    assert_eq!(
        recipients::tenant_quiet_hours(pool, &tenant.id)
            .await
            .unwrap(),
        Some(QuietHours::parse("21:30", "08:00").unwrap())
    );

    assert_eq!(
        tenant.graphql(CLEAR_QUIET_HOURS, json!({})).await["clearQuietHours"],
        true
    );
    assert_eq!(
        tenant.graphql(QUIET_HOURS, json!({})).await["quietHours"],
        Value::Null
    );
    assert_eq!(
        recipients::tenant_quiet_hours(pool, &tenant.id)
            .await
            .unwrap(),
        None
    );
    // Clearing again is accepted and records nothing.
    tenant.graphql(CLEAR_QUIET_HOURS, json!({})).await;
    let stream = recipients::settings_stream_id(&tenant.id);
    let types: Vec<String> = tenant
        .app
        .store
        .read_stream(&stream, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, ["TenantQuietHoursSet", "TenantQuietHoursCleared"]);
}

#[tokio::test]
async fn another_tenant_cannot_read_or_touch_the_recipient() {
    let tenant = Tenant::start().await;
    tenant
        .graphql(UPSERT, json!({ "input": full_profile() }))
        .await;
    let (other_id, other_key) = tenant.app.tenant().await;
    let read = tenant
        .app
        .graphql(Some(&other_key), RECIPIENT, json!({ "id": "user-42" }))
        .await;
    assert_eq!(error_codes(&read), ["NOT_FOUND"], "{read}");

    // The other tenant's recipient of the same id is its own.
    let changes = json!([{ "optedIn": false }]);
    let set = tenant
        .app
        .graphql(
            Some(&other_key),
            SET_PREFERENCES,
            json!({ "id": "user-42", "changes": changes }),
        )
        .await;
    assert!(set["errors"].is_null(), "{set}");
    assert_eq!(set["data"]["setPreferences"]["hasProfile"], false);
    let ours = tenant.audience("user-42").await.unwrap();
    assert!(ours.preferences.allows(None, Channel::Email));
    assert!(ours.profile.is_some());
    let other = TenantId::parse(&other_id).unwrap();
    assert_eq!(
        recipients::tenant_quiet_hours(tenant.app.store.pool(), &other)
            .await
            .unwrap(),
        None
    );

    let anonymous = tenant
        .app
        .graphql(None, RECIPIENT, json!({ "id": "user-42" }))
        .await;
    assert_eq!(error_codes(&anonymous), ["UNAUTHENTICATED"]);

    // A read-only key reads but cannot change anything.
    let issued = tenant
        .graphql(
            r#"mutation { issueApiKey(name: "reader", scopes: [READ]) { apiKey } }"#,
            json!({}),
        )
        .await;
    let reader = issued["issueApiKey"]["apiKey"].as_str().unwrap();
    let read = tenant
        .app
        .graphql(Some(reader), RECIPIENT, json!({ "id": "user-42" }))
        .await;
    assert!(read["errors"].is_null(), "{read}");
    let upsert = tenant
        .app
        .graphql(Some(reader), UPSERT, json!({ "input": full_profile() }))
        .await;
    assert_eq!(error_codes(&upsert), ["FORBIDDEN"]);
    let quiet = tenant
        .app
        .graphql(
            Some(reader),
            SET_QUIET_HOURS,
            json!({ "start": "22:00", "end": "07:00" }),
        )
        .await;
    assert_eq!(error_codes(&quiet), ["FORBIDDEN"]);
}

#[tokio::test]
async fn bad_input_is_a_validation_error_naming_each_field() {
    let tenant = Tenant::start().await;
    let input = json!({
        "id": "user-42",
        "email": "not-an-email",
        "timezone": "Mars/Olympus_Mons",
        "quietHours": { "start": "22:00", "end": "7am" },
    });
    let response = tenant
        .app
        .graphql(Some(&tenant.key), UPSERT, json!({ "input": input }))
        .await;
    let mut paths = field_paths(&response);
    paths.sort();
    assert_eq!(paths, ["email", "quiet_hours.end", "timezone"]);
    assert!(tenant.audience("user-42").await.is_none(), "nothing stored");

    let same = json!({ "id": "user-42", "quietHours": { "start": "22:00", "end": "22:00" } });
    let response = tenant
        .app
        .graphql(Some(&tenant.key), UPSERT, json!({ "input": same }))
        .await;
    assert_eq!(field_paths(&response), ["quiet_hours.end"]);

    let response = tenant
        .app
        .graphql(
            Some(&tenant.key),
            SET_QUIET_HOURS,
            json!({ "start": "25:00", "end": "07:00" }),
        )
        .await;
    assert_eq!(field_paths(&response), ["start"]);

    let response = tenant
        .app
        .graphql(
            Some(&tenant.key),
            SET_PREFERENCES,
            json!({ "id": "user-42", "changes": [] }),
        )
        .await;
    assert_eq!(field_paths(&response), ["changes"]);

    let bad_category = json!([{ "category": "Billing Stuff", "optedIn": false }]);
    let response = tenant
        .app
        .graphql(
            Some(&tenant.key),
            SET_PREFERENCES,
            json!({ "id": "user-42", "changes": bad_category }),
        )
        .await;
    assert_eq!(field_paths(&response), ["changes[0].category"]);

    let response = tenant
        .app
        .graphql(Some(&tenant.key), RECIPIENT, json!({ "id": "nobody" }))
        .await;
    assert_eq!(error_codes(&response), ["NOT_FOUND"]);
}
