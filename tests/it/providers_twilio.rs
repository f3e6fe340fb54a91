//! The `twilio` driver through a real `herald serve`, against a loopback
//! stand-in for Twilio's Messages API (tests/peers/twilio_api.py), with
//! status callbacks signed by the official `twilio` library's
//! `RequestValidator`, so Herald's check is held against Twilio's own code.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::peers::{Peer, free_port};
use crate::served::{Served, serve};
use crate::support::eventually;

const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";
const AUTH_TOKEN: &str = "twilio-test-auth-token-0123456789";
const FROM: &str = "+15005550006";

const SEND: &str = "mutation($input: SendNotificationInput!) { sendNotification(input: $input) { notification { id } } }";
const READ: &str =
    "query($id: ID!) { notification(id: $id) { status attempts timeline { type data } } }";

async fn twilio_api() -> Peer {
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/twilio_api.py");
    Peer::spawn_python(
        "Twilio API",
        &[
            script,
            "--port",
            &port.to_string(),
            "--account-sid",
            ACCOUNT_SID,
            "--auth-token",
            AUTH_TOKEN,
        ],
        port,
    )
    .await
}

struct Service {
    served: Served,
    twilio: Peer,
    /// Held for the failover test.
    _moto: Option<Peer>,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Herald routing SMS to the `twilio` instance, then (with `sns_failover`)
/// to an `sns` instance on moto.
async fn service(sns_failover: bool) -> Service {
    let dir = std::env::temp_dir().join(format!("herald-twilio-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let twilio = twilio_api().await;
    let mut config = format!(
        "[providers.twilio]\nkind = \"twilio\"\naccount_sid = \"{ACCOUNT_SID}\"\n\
         auth_token = \"{AUTH_TOKEN}\"\nfrom = \"{FROM}\"\nbase_url = \"http://127.0.0.1:{}\"\n\n\
         [routing.costs.twilio]\ndefault = 0.0079\n\n\
         [delivery]\nretry_delays_seconds = [0.2, 0.2]\n\n",
        twilio.port
    );
    let moto = if sns_failover {
        let port = free_port();
        let moto = Peer::spawn_python(
            "moto",
            &[
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ],
            port,
        )
        .await;
        config.push_str(&format!(
            "[providers.sns]\nkind = \"sns\"\nendpoint_url = \"http://127.0.0.1:{port}\"\n\
             access_key_id = \"AKIDHERALDTEST\"\nsecret_access_key = \"herald-test-secret\"\n\n\
             [routing.channels]\nsms = [\"twilio\", \"sns\"]\n"
        ));
        Some(moto)
    } else {
        config.push_str("[routing.channels]\nsms = [\"twilio\"]\n");
        None
    };
    let served = serve(&dir, "Texts", &config).await;
    Service {
        served,
        twilio,
        _moto: moto,
        dir,
    }
}

impl Service {
    async fn send(&self, phone: &str) -> String {
        let sent = self
            .served
            .graphql(
                SEND,
                json!({ "input": {
                    "recipient": { "phone": phone },
                    "channels": ["SMS"],
                    "content": { "title": "Sign-in", "text": "Your code is 384921" }
                }}),
            )
            .await;
        sent["sendNotification"]["notification"]["id"]
            .as_str()
            .expect("an id")
            .to_string()
    }

    async fn notification(&self, id: &str) -> Value {
        self.served.graphql(READ, json!({ "id": id })).await["notification"].clone()
    }

    async fn wait_for_status(&self, id: &str, status: &str) -> Value {
        eventually(Duration::from_secs(20), async || {
            let notification = self.notification(id).await;
            if notification["status"] == status {
                Ok(notification)
            } else {
                Err(format!("waiting for {status}: {notification}"))
            }
        })
        .await
    }

    /// Every request the Twilio stand-in got, oldest first.
    async fn requests(&self) -> Vec<Value> {
        reqwest::get(format!(
            "http://127.0.0.1:{}/_peer/requests",
            self.twilio.port
        ))
        .await
        .expect("the Twilio stand-in answers")
        .json()
        .await
        .expect("a JSON list")
    }

    /// `RequestValidator(auth_token).compute_signature(url, params)`.
    async fn twilio_signature(&self, url: &str, params: &Value) -> String {
        let signed: Value = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/_peer/sign", self.twilio.port))
            .json(&json!({ "url": url, "params": params }))
            .send()
            .await
            .expect("the signer answers")
            .json()
            .await
            .expect("JSON");
        signed["signature"]
            .as_str()
            .expect("a signature")
            .to_string()
    }

    /// Posts a status callback form to `url` as Twilio does.
    async fn callback(&self, url: &str, params: &Value, signature: Option<&str>) -> (u16, String) {
        let form: Vec<(String, String)> = params
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, value)| (name.clone(), value.as_str().unwrap().to_string()))
            .collect();
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut request = self
            .served
            .http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        let answer = request.send().await.expect("an answer");
        (
            answer.status().as_u16(),
            answer.text().await.expect("a body"),
        )
    }
}

fn types(notification: &Value) -> Vec<String> {
    notification["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn an_sms_goes_through_twilio_and_a_signed_callback_marks_it_delivered() {
    let service = service(false).await;
    let id = service.send("+447700900123").await;
    service.wait_for_status(&id, "SENT").await;

    let requests = service.requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request["authorized"], true, "Basic auth with SID and token");
    assert_eq!(request["status"], 201);
    assert_eq!(request["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(request["notification_id"], id.as_str());
    let form = &request["form"];
    assert_eq!(form["To"], "+447700900123");
    assert_eq!(form["Body"], "Your code is 384921");
    assert_eq!(form["From"], FROM);
    assert!(form.get("MessagingServiceSid").is_none());
    let callback_url = form["StatusCallback"].as_str().expect("a StatusCallback");
    assert_eq!(
        callback_url,
        format!("{}/webhooks/twilio/twilio", service.served.base)
    );
    let sid = request["sid"].as_str().unwrap();
    let sent = service.notification(&id).await;
    let sent_event = sent["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "NotificationSent")
        .expect("NotificationSent");
    assert_eq!(
        sent_event["data"]["provider_message_id"], sid,
        "{sent_event}"
    );

    let status = |status: &str| {
        json!({
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "From": FROM,
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": "+447700900123",
        })
    };

    // A status on the way is acknowledged and changes nothing.
    let queued = status("sent");
    let signature = service.twilio_signature(callback_url, &queued).await;
    let (code, body) = service
        .callback(callback_url, &queued, Some(&signature))
        .await;
    assert_eq!((code, body.contains("ignored")), (200, true), "{body}");

    // A wrong or missing signature is refused, and nothing recorded.
    let delivered = status("delivered");
    let signature = service.twilio_signature(callback_url, &delivered).await;
    let forged = service
        .twilio_signature(callback_url, &status("undelivered"))
        .await;
    for wrong in [Some(forged.as_str()), None] {
        let (code, body) = service.callback(callback_url, &delivered, wrong).await;
        assert_eq!(code, 403, "{body}");
        assert!(body.contains("X-Twilio-Signature"), "{body}");
    }
    // Signed for another URL (another provider name) does not verify either.
    let elsewhere = callback_url.replace("/twilio/twilio", "/twilio/other");
    let (code, _) = service
        .callback(
            callback_url,
            &delivered,
            Some(&service.twilio_signature(&elsewhere, &delivered).await),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(service.notification(&id).await["status"], "SENT");

    let (code, body) = service
        .callback(callback_url, &delivered, Some(&signature))
        .await;
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "recorded", "{answer}");
    assert_eq!(answer["notificationId"], id.as_str());
    let notification = service.wait_for_status(&id, "DELIVERED").await;
    assert_eq!(
        types(&notification).last().map(String::as_str),
        Some("NotificationDelivered")
    );

    // 21211 (an invalid 'To'): permanent, and Twilio is the only SMS
    // provider, so it is dead-lettered without a retry.
    let invalid = service.send("+15005550001").await;
    let dead = service.wait_for_status(&invalid, "DEAD_LETTERED").await;
    assert_eq!(dead["attempts"], 1, "{dead}");
    let failed = dead["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "DeliveryFailed")
        .expect("DeliveryFailed");
    assert!(
        failed.to_string().contains("21211"),
        "the failure names Twilio's code: {failed}"
    );

    let calls: Vec<Value> = service
        .requests()
        .await
        .into_iter()
        .filter(|request| request["form"]["To"] == "+15005550001")
        .collect();
    assert_eq!(calls.len(), 1, "never retried: {calls:?}");
    assert_eq!(calls[0]["status"], 400);
}

#[tokio::test]
async fn a_twilio_server_error_fails_over_to_sns_at_once() {
    let service = service(true).await;

    // 500: transient, so the next provider takes it at once.
    let unlucky = service.send("+15005550500").await;
    let sent = service.wait_for_status(&unlucky, "SENT").await;
    let sent_event = sent["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "NotificationSent")
        .expect("NotificationSent");
    assert_eq!(sent_event["data"]["provider"], "sns", "{sent_event}");

    let requests = service.requests().await;
    let to = |number: &str| {
        requests
            .iter()
            .filter(|request| request["form"]["To"] == number)
            .map(|request| request["status"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(to("+15005550500"), [500], "one call, then SNS");
}
