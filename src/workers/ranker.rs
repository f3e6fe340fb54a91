//! The ranker: how urgent a requested notification is, and so when it
//! goes. The rules in [`crate::domain::ranking`] always give an answer; an
//! OpenAI-compatible chat-completions model may be asked first, and when it
//! fails, is slow or talks nonsense the rules decide and the breakdown says why.
//!
//! The model sees only non-personal features (priority, category, channels,
//! segment, source event age, tags), never addresses or message bodies.

use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::NotificationState;
use crate::domain::ranking::{Ranking, RankingRules, rank_by_rules, seconds_between};
use crate::signing::Secret;

/// `[ranking]`: the rules (`[ranking.rules]`) and an optional model (`[ranking.llm]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankingConfig {
    pub rules: RankingRules,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmScorerConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmScorerConfig {
    /// A chat-completions endpoint, e.g. `http://127.0.0.1:11434/v1/chat/completions`.
    pub url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer ...` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Ranking sits in front of every send; a model slower than this is
    /// skipped for that notification and the rules decide.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    800
}

/// Longest model `reason` kept in the breakdown.
const MAX_REASON_CHARS: usize = 280;
/// Longest fallback explanation kept in the breakdown.
const MAX_FALLBACK_CHARS: usize = 300;

const SYSTEM_PROMPT: &str = "You rank notifications in a delivery queue by urgency. \
The user message is one notification's features as JSON: priority (HIGH, NORMAL or LOW), \
category, channels in order of preference, the recipient's audience segment, \
source_event_age_seconds (how long ago the event behind it happened) and tags. \
Answer with only a JSON object {\"score\": <number from 0 to 1>, \"reason\": \"<at most 20 words>\"}. \
1 means send at once (security, one-time codes, time-critical transactional messages); \
0 means it can wait or is barely worth sending (stale news, promotions).";

pub struct Ranker {
    rules: RankingRules,
    llm: Option<LlmScorer>,
}

struct LlmScorer {
    client: reqwest::Client,
    url: reqwest::Url,
    model: String,
    api_key: Option<Secret>,
    timeout: Duration,
}

/// What the model answered, after checking it.
#[derive(Debug, Deserialize)]
struct Verdict {
    score: f64,
    #[serde(default)]
    reason: String,
}

impl Ranker {
    /// Fails on rules that could give an unstorable score or an unusable
    /// model endpoint, so a bad config stops Herald at start.
    pub fn new(config: &RankingConfig) -> anyhow::Result<Ranker> {
        config
            .rules
            .validate()
            .map_err(|errors| anyhow!("invalid ranking.rules: {errors}"))?;
        let llm = config.llm.as_ref().map(LlmScorer::new).transpose()?;
        Ok(Ranker {
            rules: config.rules.clone(),
            llm,
        })
    }

    /// Never fails: without a usable model answer the rules decide.
    pub async fn rank(&self, state: &NotificationState, now: DateTime<Utc>) -> Ranking {
        let by_rules = rank_by_rules(state, &self.rules, now);
        let ranking = match &self.llm {
            None => by_rules,
            Some(llm) => match llm.score(state, now).await {
                Ok(verdict) => Ranking {
                    score: verdict.score,
                    breakdown: json!({
                        "reason": clip(&verdict.reason, MAX_REASON_CHARS),
                        "rules_score": by_rules.score,
                    }),
                    scorer: format!("llm:{}", llm.model),
                    send_after: self.rules.send_after(state, verdict.score, now),
                },
                Err(why) => {
                    let why = clip(&why, MAX_FALLBACK_CHARS);
                    tracing::warn!(
                        notification_id = %state.notification_id,
                        model = %llm.model,
                        reason = %why,
                        "LLM scorer failed; ranked by rules"
                    );
                    let mut ranking = by_rules;
                    ranking.breakdown["llm_fallback"] = Value::String(why);
                    ranking
                }
            },
        };
        metrics::counter!("ranker_decisions_total", "scorer" => ranking.scorer.clone())
            .increment(1);
        ranking
    }
}

impl LlmScorer {
    fn new(config: &LlmScorerConfig) -> anyhow::Result<LlmScorer> {
        let url = reqwest::Url::parse(&config.url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| anyhow!("ranking.llm.url must be an http(s) URL"))?;
        if config.timeout_ms == 0 {
            return Err(anyhow!("ranking.llm.timeout_ms must be more than 0"));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .build()
            .context("building the LLM scorer's HTTP client")?;
        Ok(LlmScorer {
            client,
            url,
            model: config.model.clone(),
            api_key: config.api_key.clone(),
            timeout,
        })
    }

    /// The model's verdict, or why there is none.
    async fn score(
        &self,
        state: &NotificationState,
        now: DateTime<Utc>,
    ) -> Result<Verdict, String> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": features(state, now).to_string()},
            ],
        });
        let mut request = self.client.post(self.url.clone()).json(&body);
        if let Some(api_key) = &self.api_key {
            request = request.bearer_auth(api_key.expose());
        }
        let call = async {
            let response = request.send().await.map_err(describe)?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("the model answered HTTP {status}"));
            }
            let completion: Value = response.json().await.map_err(describe)?;
            verdict(&completion)
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {} ms", self.timeout.as_millis()))?
    }
}

/// What the model may know about a notification: nothing personal.
fn features(state: &NotificationState, now: DateTime<Utc>) -> Value {
    let request = &state.request;
    let origin = request.source_event.as_ref();
    json!({
        "priority": request.priority,
        "category": request.category,
        "channels": request.channels,
        "segment": origin.and_then(|origin| origin.segment.as_ref()),
        "source_event_age_seconds": origin
            .map(|origin| seconds_between(origin.occurred_at, now).round()),
        "tags": request.tags,
    })
}

/// The verdict in a chat completion: the first choice's content, a JSON
/// object with a score in 0..=1. Models like to wrap JSON in prose or code
/// fences, so the outermost braces are taken.
fn verdict(completion: &Value) -> Result<Verdict, String> {
    let content = completion["choices"][0]["message"]["content"]
        .as_str()
        .ok_or("the answer has no choices[0].message.content")?;
    let object = content
        .find('{')
        .zip(content.rfind('}'))
        .and_then(|(start, end)| content.get(start..=end))
        .ok_or_else(|| format!("no JSON object in the answer: {}", clip(content, 80)))?;
    let verdict: Verdict = serde_json::from_str(object)
        .map_err(|error| format!("unparsable verdict {}: {error}", clip(object, 80)))?;
    if !(0.0..=1.0).contains(&verdict.score) {
        return Err(format!("score {} is outside 0..1", verdict.score));
    }
    Ok(verdict)
}

/// A transport error with its causes, without the URL (a query string may
/// carry a key).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn clip(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use chrono::TimeZone;

    use super::*;
    use crate::domain::values::{NotificationId, TenantId};
    use crate::domain::{Aggregate, Notification, NotificationEvent, SendNotification};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap()
    }

    /// A LOW marketing email about an event ten minutes old.
    fn state() -> NotificationState {
        let request = serde_json::from_value::<SendNotification>(json!({
            "recipient": {"id": "user-1", "email": "ada@example.com"},
            "channels": ["email"],
            "priority": "low",
            "content": {"title": "Sale", "text": "Secret body text"},
            "category": "marketing",
            "tags": ["spring-sale"],
            "source_event": {"event_id": "e-1", "source": "shop",
                             "occurred_at": now() - chrono::TimeDelta::minutes(10),
                             "segment": "premium"}
        }))
        .unwrap()
        .parse(now())
        .unwrap();
        let mut notification = Notification::default();
        notification.apply(&NotificationEvent::Requested {
            tenant_id: TenantId::parse("t_1").unwrap(),
            notification_id: NotificationId::from(uuid::Uuid::from_u128(7)),
            request,
            requested_at: now(),
        });
        notification.state().unwrap().clone()
    }

    /// What the fake endpoint saw: each request's body and Authorization header.
    type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

    /// A chat-completions endpoint on 127.0.0.1 that answers `status` with
    /// `content` as the message, or never answers when `hang`.
    async fn fake_llm(status: StatusCode, content: &'static str, hang: bool) -> (String, Seen) {
        let seen = Seen::default();
        let handler = move |State(seen): State<Seen>, headers: HeaderMap, body: String| async move {
            let auth = headers
                .get("authorization")
                .map(|value| value.to_str().unwrap().to_owned());
            seen.lock()
                .unwrap()
                .push((serde_json::from_str(&body).unwrap(), auth));
            if hang {
                std::future::pending::<()>().await;
            }
            let answer =
                json!({"choices": [{"message": {"role": "assistant", "content": content}}]});
            (status, answer.to_string())
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(handler))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, seen)
    }

    fn ranker_for(url: String, timeout_ms: u64) -> Ranker {
        Ranker::new(&RankingConfig {
            rules: RankingRules::default(),
            llm: Some(LlmScorerConfig {
                url,
                model: "tiny".into(),
                api_key: Some(Secret::new("sk-test")),
                timeout_ms,
            }),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_good_answer_decides() {
        let (url, seen) = fake_llm(
            StatusCode::OK,
            "```json\n{\"score\": 0.12, \"reason\": \"promotion, not urgent\"}\n```",
            false,
        )
        .await;

        let ranking = ranker_for(url, 2000).rank(&state(), now()).await;

        assert_eq!(ranking.scorer, "llm:tiny");
        assert_eq!(ranking.score, 0.12);
        assert_eq!(ranking.breakdown["reason"], "promotion, not urgent");
        assert!(ranking.breakdown["rules_score"].is_number());
        let seen = seen.lock().unwrap();
        let (body, auth) = &seen[0];
        assert_eq!(auth.as_deref(), Some("Bearer sk-test"));
        assert_eq!(body["model"], "tiny");
        let features: Value =
            serde_json::from_str(body["messages"][1]["content"].as_str().unwrap()).unwrap();
        assert_eq!(
            features,
            json!({"priority": "LOW", "category": "marketing", "channels": ["email"],
                   "segment": "premium", "source_event_age_seconds": 600.0,
                   "tags": ["spring-sale"]})
        );
        let sent = body.to_string();
        assert!(!sent.contains("ada@example.com") && !sent.contains("Secret body"));
    }

    #[tokio::test]
    async fn a_hanging_model_falls_back_within_the_timeout() {
        let (url, _) = fake_llm(StatusCode::OK, "{}", true).await;
        let started = Instant::now();

        let ranking = ranker_for(url, 200).rank(&state(), now()).await;

        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(ranking.scorer, "rules");
        assert_eq!(ranking.breakdown["llm_fallback"], "no answer within 200 ms");
        assert_eq!(
            ranking.score,
            rank_by_rules(&state(), &RankingRules::default(), now()).score
        );
    }

    #[tokio::test]
    async fn a_server_error_falls_back() {
        let (url, _) = fake_llm(StatusCode::INTERNAL_SERVER_ERROR, "{}", false).await;

        let ranking = ranker_for(url, 2000).rank(&state(), now()).await;

        assert_eq!(ranking.scorer, "rules");
        assert_eq!(
            ranking.breakdown["llm_fallback"],
            "the model answered HTTP 500 Internal Server Error"
        );
    }

    #[tokio::test]
    async fn garbage_and_out_of_range_answers_fall_back() {
        for content in [
            "I would say it is fairly urgent.",
            "{\"score\": \"high\"}",
            "{\"score\": 7, \"reason\": \"0..100?\"}",
        ] {
            let (url, _) = fake_llm(StatusCode::OK, content, false).await;

            let ranking = ranker_for(url, 2000).rank(&state(), now()).await;

            assert_eq!(ranking.scorer, "rules", "{content}");
            assert!(ranking.breakdown["llm_fallback"].is_string(), "{content}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_model_falls_back() {
        // Bound then dropped: nothing listens there any more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/v1/chat/completions",
            listener.local_addr().unwrap()
        );
        drop(listener);

        let ranking = ranker_for(url, 2000).rank(&state(), now()).await;

        assert_eq!(ranking.scorer, "rules");
        assert!(ranking.breakdown["llm_fallback"].is_string());
    }

    #[tokio::test]
    async fn without_a_model_the_rules_decide() {
        let ranker = Ranker::new(&RankingConfig::default()).unwrap();

        let ranking = ranker.rank(&state(), now()).await;

        assert_eq!(
            ranking,
            rank_by_rules(&state(), &RankingRules::default(), now())
        );
    }

    #[test]
    fn config_is_nested_and_checked() {
        let config: RankingConfig = toml::from_str(
            r#"
            [rules.priority]
            low = 0.1
            [rules.defer]
            below = 0.2
            seconds = 900
            [llm]
            url = "http://127.0.0.1:11434/v1/chat/completions"
            model = "qwen2.5:0.5b"
            "#,
        )
        .unwrap();
        assert_eq!(config.rules.priority.low, 0.1);
        assert_eq!(config.llm.as_ref().unwrap().timeout_ms, 800);
        assert!(Ranker::new(&config).is_ok());

        assert!(
            toml::from_str::<RankingConfig>(
                "[llm]\nurl = \"http://x\"\nmodel = \"m\"\nkey = \"k\""
            )
            .is_err()
        );
        assert!(toml::from_str::<RankingConfig>("weights = 1").is_err());
        let bad_url = RankingConfig {
            llm: Some(LlmScorerConfig {
                url: "ftp://x".into(),
                ..config.llm.clone().unwrap()
            }),
            ..config.clone()
        };
        assert!(Ranker::new(&bad_url).is_err());
        let bad_rules: RankingConfig = toml::from_str("[rules]\nage_weight = inf").unwrap();
        let error = Ranker::new(&bad_rules).err().unwrap().to_string();
        assert!(error.contains("age_weight"), "{error}");
    }

    #[test]
    fn the_api_key_is_masked_when_config_is_printed() {
        let config = LlmScorerConfig {
            url: "http://x".into(),
            model: "m".into(),
            api_key: Some(Secret::new("sk-live")),
            timeout_ms: 800,
        };

        assert!(!toml::to_string(&config).unwrap().contains("sk-live"));
        assert!(!format!("{config:?}").contains("sk-live"));
    }
}
