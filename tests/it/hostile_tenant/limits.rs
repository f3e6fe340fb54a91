//! A tenant's admin key tries to raise or lift the operator's `[limits]`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use herald::commands::limits::{Limits, LimitsConfig};
use herald::commands::{Actor, tenants};
use herald::config::Config;
use herald::domain::values::{Channel, TenantId};
use herald::domain::{Budget, RateLimit, TenantLimits};

use crate::support::{TestApp, error_codes};

const SET: &str = r#"mutation($limits: TenantLimitsInput!) {
  setTenantLimits(limits: $limits) { messagesPerDay }
}"#;
const READ: &str = "{ tenantLimits { messagesPerDay monthlyBudget channelRates { channel perSecond burst } apiRate { perSecond burst } overrides } }";
const SEND: &str = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";

fn operator_limits() -> LimitsConfig {
    LimitsConfig {
        messages_per_day: Some(3),
        monthly_budget: Some(Budget::try_from(100.0).unwrap()),
        channel_rates: BTreeMap::from([(Channel::Sms, RateLimit::new(5.0, 10.0).unwrap())]),
        ..LimitsConfig::default()
    }
}

async fn start() -> (TestApp, String) {
    let config = Config {
        limits: operator_limits(),
        ..Config::default()
    };
    let (app, operators) = TestApp::start_with_operators(&config, 1).await;
    let operator_key = operators[0].api_key.clone();
    (app, operator_key)
}

/// The `(path, message)` of each field a VALIDATION error names.
fn refused_fields(response: &Value) -> Vec<(String, String)> {
    assert_eq!(error_codes(response), ["VALIDATION"], "{response}");
    response["errors"][0]["extensions"]["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Sends until refused; the number of sends accepted (at most `most`).
async fn sends_accepted(app: &TestApp, key: &str, most: usize) -> (usize, Value) {
    let input = json!({ "input": { "recipient": { "email": "ada@example.com" }, "channels": ["EMAIL"], "content": { "text": "hi" } } });
    for sent in 0..most {
        let answer = app.graphql(Some(key), SEND, input.clone()).await;
        if !answer["errors"].is_null() {
            return (sent, answer);
        }
    }
    (most, Value::Null)
}

#[tokio::test]
async fn a_tenant_admin_cannot_raise_or_lift_the_operators_limits() {
    let (app, operator_key) = start().await;
    let (_, key) = app.tenant().await;

    for (limits, path, operator_value) in [
        (
            json!({ "messagesPerDay": 1000000 }),
            "messages_per_day",
            "3",
        ),
        (json!({ "messagesPerDay": null }), "messages_per_day", "3"),
        (json!({ "monthlyBudget": 1e9 }), "monthly_budget", "100"),
        (json!({ "monthlyBudget": null }), "monthly_budget", "100"),
        (
            json!({ "channelRates": [{ "channel": "SMS", "rate": { "perSecond": 500, "burst": 10 } }] }),
            "channel_rates.sms",
            "5/s (burst 10)",
        ),
        (
            json!({ "channelRates": [{ "channel": "SMS", "rate": null }] }),
            "channel_rates.sms",
            "5/s (burst 10)",
        ),
        (
            json!({ "apiRate": { "perSecond": 1e6, "burst": 1e6 } }),
            "api_rate",
            "500/s (burst 1000)",
        ),
    ] {
        let answer = app
            .graphql(Some(&key), SET, json!({ "limits": limits }))
            .await;
        let fields = refused_fields(&answer);
        assert_eq!(fields.len(), 1, "{answer}");
        assert_eq!(fields[0].0, path, "{answer}");
        assert!(
            fields[0]
                .1
                .contains(&format!("operator's limit of {operator_value}")),
            "{answer}"
        );
    }

    // Nothing changed: the operator's limits hold, and a send past them is refused.
    let read = app.graphql(Some(&key), READ, json!({})).await;
    assert_eq!(read["data"]["tenantLimits"]["messagesPerDay"], 3, "{read}");
    assert_eq!(read["data"]["tenantLimits"]["monthlyBudget"], 100.0);
    assert_eq!(read["data"]["tenantLimits"]["overrides"], json!({}));
    let (sent, refused) = sends_accepted(&app, &key, 5).await;
    assert_eq!(sent, 3);
    assert_eq!(error_codes(&refused), ["QUOTA_EXCEEDED"], "{refused}");

    // Lowering is the tenant's right.
    let lowered = app
        .graphql(
            Some(&key),
            SET,
            json!({ "limits": { "messagesPerDay": 2, "apiRate": { "perSecond": 50, "burst": 100 } } }),
        )
        .await;
    assert_eq!(
        lowered["data"]["setTenantLimits"]["messagesPerDay"], 2,
        "{lowered}"
    );

    // An operator tenant's key raises and lifts its own.
    let raised = app
        .graphql(
            Some(&operator_key),
            SET,
            json!({ "limits": { "messagesPerDay": 5, "monthlyBudget": null } }),
        )
        .await;
    assert_eq!(
        raised["data"]["setTenantLimits"]["messagesPerDay"], 5,
        "{raised}"
    );
    let (sent, _) = sends_accepted(&app, &operator_key, 5).await;
    assert_eq!(sent, 5, "past the operator's 3 a day");
}

#[tokio::test]
async fn a_raise_stored_before_the_rule_never_takes_effect() {
    let (app, _) = start().await;
    let (tenant, key) = app.tenant().await;
    let tenant = TenantId::parse(&tenant).unwrap();
    // As if stored before the rule (or under a higher `[limits]`): recorded
    // with an operator's authority.
    let lenient = Limits::new(operator_limits()).with_operators(&[tenant.to_string()]);
    let raised = TenantLimits {
        messages_per_day: Some(None),
        channel_rates: BTreeMap::from([(
            Channel::Sms,
            Some(RateLimit::new(500.0, 500.0).unwrap()),
        )]),
        api_rate: Some(None),
        ..TenantLimits::default()
    };
    tenants::set_limits(&app.store, &tenant, raised, &lenient, &Actor::new("test"))
        .await
        .unwrap();

    let read = app.graphql(Some(&key), READ, json!({})).await;
    let limits = &read["data"]["tenantLimits"];
    assert_eq!(limits["messagesPerDay"], 3, "{read}");
    assert_eq!(
        limits["channelRates"],
        json!([{ "channel": "SMS", "perSecond": 5.0, "burst": 10.0 }])
    );
    assert_eq!(
        limits["apiRate"],
        json!({ "perSecond": 500.0, "burst": 1000.0 })
    );
    let (sent, refused) = sends_accepted(&app, &key, 5).await;
    assert_eq!(sent, 3);
    assert_eq!(error_codes(&refused), ["QUOTA_EXCEEDED"], "{refused}");
}
