//! One configuration struct, from defaults, an optional `herald.toml` and the
//! environment (later sources win). Unknown keys, bad values and routing to a
//! provider that is not configured fail at start with an error that names
//! the key and where it came from. `herald.example.toml` shows every default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::commands::limits::LimitsConfig;
use crate::commands::links::LinksConfig;
use crate::commands::receipts::ReceiptsConfig;
use crate::domain::attachment::AttachmentsConfig;
use crate::egress::EgressConfig;
use crate::projections::engagement_gauges::AnalyticsConfig;
use crate::providers::{ProviderConfig, default_provider_configs};
use crate::telemetry::LogFormat;
use crate::workers::breaker::BreakerConfig;
use crate::workers::ranker::RankingConfig;
use crate::workers::{DeliveryConfig, RoutingConfig};

/// `HERALD_CONFIG` names the file; it is not itself a setting.
const CONFIG_FILE_VAR: &str = "HERALD_CONFIG";
const DEFAULT_CONFIG_FILE: &str = "herald.toml";
/// `HERALD_DELIVERY__LOW_PRIORITY_SHARE` sets `delivery.low_priority_share`.
const NESTED_KEY_SEPARATOR: &str = "__";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// PostgreSQL to use; without it Herald runs a private cluster under `data_dir`.
    pub database_url: Option<DatabaseUrl>,
    /// Connections in the pool of each process.
    pub database_max_connections: u32,
    /// Address of the HTTP API.
    pub listen: SocketAddr,
    /// Where `/metrics` is served, apart from the API: they describe every
    /// tenant's traffic. `"off"` serves none.
    #[serde(with = "address_or_off")]
    pub metrics_listen: Option<SocketAddr>,
    /// Browser origins allowed to call `/graphql` (with a feed token).
    pub cors_origins: Vec<crate::api::CorsOrigin>,
    /// Where Herald keeps its own files (the embedded cluster lives in `pg/`).
    pub data_dir: PathBuf,
    pub log_format: LogFormat,
    /// A tracing filter such as `info` or `herald=debug,sqlx=warn`.
    pub log_filter: String,
    /// Traces go to this OTLP/HTTP collector only when it is set.
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// How long in-flight work may take to finish after SIGINT/SIGTERM.
    pub shutdown_timeout_seconds: u64,
    /// A repeated idempotency key within this window returns the original notification.
    pub idempotency_window_seconds: u64,
    /// An HTTP request taking longer is answered 408.
    pub request_timeout_seconds: u64,
    /// Largest accepted request body.
    pub max_request_bytes: usize,
    /// Provider instances by name (`[providers.NAME]` with a `kind`).
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routing: RoutingConfig,
    pub delivery: DeliveryConfig,
    /// `[campaigns]`: callback retries and batch pacing.
    pub campaigns: crate::workers::campaigns::CampaignsConfig,
    /// `[scheduler]`: recurring schedules' poll interval and missed-slot threshold.
    pub scheduler: crate::workers::scheduler::SchedulerConfig,
    /// `[workflows]`: the workflow worker's poll and lease, and the time
    /// scale of runs' rests (below 1 only in tests).
    pub workflows: crate::commands::workflows::WorkflowsConfig,
    pub ranking: RankingConfig,
    pub breaker: BreakerConfig,
    pub limits: LimitsConfig,
    /// Email attachments: size caps (per tenant), allowed types, fetch timeout.
    pub attachments: AttachmentsConfig,
    /// `[egress]`: the operator's own networks tenants' URLs may reach.
    pub egress: EgressConfig,
    /// Tenants whose `ops` (or `admin`) keys may run system-wide operations
    /// through the API: retry, skip and rebuild projections, which every
    /// tenant shares. API keys belong to one tenant, so this names the
    /// operators' own tenants (`["t_ops"]`; in the environment
    /// `HERALD_OPERATOR_TENANTS=[t_ops]`); empty, only the CLI can.
    pub operator_tenants: Vec<String>,
    /// Inbound delivery receipts (`/webhooks/sns`, `/webhooks/NAME`).
    pub receipts: ReceiptsConfig,
    /// Unsubscribe, preference and tracking links: signing secret, public URL, lifetimes.
    pub links: LinksConfig,
    /// `[analytics]`: the engagement gauges' refresh, window and cap.
    pub analytics: AnalyticsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            database_max_connections: 20,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            cors_origins: Vec::new(),
            data_dir: PathBuf::from("./.herald"),
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            otel_exporter_otlp_endpoint: None,
            shutdown_timeout_seconds: 30,
            idempotency_window_seconds: 24 * 60 * 60,
            request_timeout_seconds: 30,
            max_request_bytes: 16 * 1024 * 1024,
            providers: default_provider_configs(),
            routing: RoutingConfig::default(),
            delivery: DeliveryConfig::default(),
            campaigns: crate::workers::campaigns::CampaignsConfig::default(),
            scheduler: crate::workers::scheduler::SchedulerConfig::default(),
            workflows: crate::commands::workflows::WorkflowsConfig::default(),
            ranking: RankingConfig::default(),
            breaker: BreakerConfig::default(),
            limits: LimitsConfig::default(),
            attachments: AttachmentsConfig::default(),
            egress: EgressConfig::default(),
            operator_tenants: Vec::new(),
            receipts: ReceiptsConfig::default(),
            links: LinksConfig::default(),
            analytics: AnalyticsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// Settings that are each valid but do not make sense together.
    #[error("invalid configuration: {0}")]
    Inconsistent(&'static str),
    /// A provider's settings that cannot work.
    #[error("invalid configuration: providers.{provider}: {problem}")]
    Provider {
        provider: String,
        problem: &'static str,
    },
    /// Every send routed there would be rejected at run time.
    #[error(
        "invalid configuration: {entry} names provider {provider:?}, which is not configured \
         (configured providers: {configured})"
    )]
    UnknownProvider {
        entry: String,
        provider: String,
        configured: String,
    },
}

impl Config {
    /// Loads from defaults, then the file (`explicit_file`, else `$HERALD_CONFIG`,
    /// else `./herald.toml` if present), then `HERALD_*`, `DATABASE_URL` and
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn load(explicit_file: Option<&Path>) -> Result<Config, ConfigError> {
        let named = explicit_file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(CONFIG_FILE_VAR).map(PathBuf::from));
        let file = match named {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile { path }),
            Some(path) => Some(path),
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(
                Env::prefixed("HERALD_")
                    // HERALD_TEST_* belongs to the test suite, HERALD_CONFIG names the file.
                    .filter(|key| {
                        key != "config" && !key.as_str().to_ascii_lowercase().starts_with("test_")
                    })
                    .split(NESTED_KEY_SEPARATOR),
            )
            .merge(Env::raw().only(&["DATABASE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"]))
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(e)))?;
        if let Some(problem) = config.receipts.sns.problem() {
            return Err(ConfigError::Inconsistent(problem));
        }
        config.check_routing()?;
        config.check_providers()?;
        Ok(config)
    }

    /// Settings of one provider that cannot work together, found when the
    /// configuration is read rather than when the workers start.
    fn check_providers(&self) -> Result<(), ConfigError> {
        for (name, config) in &self.providers {
            if let ProviderConfig::Twilio(twilio) = config
                && let Some(problem) = twilio.problem()
            {
                return Err(ConfigError::Provider {
                    provider: name.clone(),
                    problem,
                });
            }
        }
        Ok(())
    }

    /// Every provider routing names must be configured: a typo would
    /// otherwise reject every send routed there, at run time.
    fn check_routing(&self) -> Result<(), ConfigError> {
        let routing = &self.routing;
        let channels = routing.channels.iter().flat_map(|(channel, providers)| {
            providers
                .iter()
                .map(move |p| (format!("routing.channels.{channel}"), p))
        });
        let tenants = routing
            .tenant_providers
            .iter()
            .flat_map(|(tenant, providers)| {
                providers
                    .iter()
                    .map(move |p| (format!("routing.tenant_providers.{tenant}"), p))
            });
        let costs = routing
            .costs
            .keys()
            .map(|p| (format!("routing.costs.{p}"), p));
        match channels
            .chain(tenants)
            .chain(costs)
            .find(|(_, provider)| !self.providers.contains_key(*provider))
        {
            Some((entry, provider)) => Err(ConfigError::UnknownProvider {
                entry,
                provider: provider.clone(),
                configured: self
                    .providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            None => Ok(()),
        }
    }

    /// Every setting at its default, as TOML with a header saying how to
    /// set them: the committed `herald.example.toml` (`herald config --defaults`).
    pub fn example_toml() -> String {
        let defaults =
            toml::to_string_pretty(&Config::default()).expect("the defaults are plain TOML values");
        format!("{EXAMPLE_HEADER}\n{defaults}")
    }

    pub fn api_options(&self) -> crate::api::ApiOptions {
        crate::api::ApiOptions {
            idempotency_window: std::time::Duration::from_secs(self.idempotency_window_seconds),
            request_timeout: std::time::Duration::from_secs(self.request_timeout_seconds),
            max_request_bytes: self.max_request_bytes,
            limits: self.limits.clone(),
            costs: self.routing.cost_table(),
            operator_tenants: self.operator_tenants.clone(),
            receipts: self.receipts.clone(),
            twilio: self.twilio_receivers(),
            links: self.links(),
            attachments: self.attachments.clone(),
            cors_origins: self.cors_origins.clone(),
            egress: self.egress.clone(),
            workflows: self.workflows.clone(),
            max_import_bytes: self.campaigns.max_import_bytes,
        }
    }

    pub fn worker_options(&self) -> crate::workers::WorkerOptions {
        crate::workers::WorkerOptions {
            idempotency_window: std::time::Duration::from_secs(self.idempotency_window_seconds),
            ranking: self.ranking.clone(),
            routing: self.routing.clone(),
            delivery: self.delivery.clone(),
            breaker: self.breaker.clone(),
            limits: self.limits.clone(),
            operator_tenants: self.operator_tenants.clone(),
            campaigns: self.campaigns.clone(),
            scheduler: self.scheduler.clone(),
            links: self.links(),
            attachments: self.attachments.clone(),
            egress: self.egress.clone(),
            workflows: self.workflows.clone(),
        }
    }

    /// The provider instances as they run: a `twilio` instance without a
    /// `status_callback_url` gets `/webhooks/twilio/NAME` under the public
    /// URL of [`Config::links`].
    pub fn provider_configs(&self) -> BTreeMap<String, ProviderConfig> {
        let links = self.links();
        let mut configs = self.providers.clone();
        for (name, config) in &mut configs {
            if let ProviderConfig::Twilio(twilio) = config {
                twilio.resolve_callback_url(name, links.public_base_url.as_ref());
            }
        }
        configs
    }

    /// What the Twilio status callback routes check signatures with: each
    /// `twilio` instance's auth token and the URL Twilio is told to call.
    pub fn twilio_receivers(&self) -> BTreeMap<String, crate::api::TwilioReceiver> {
        self.provider_configs()
            .into_iter()
            .filter_map(|(name, config)| match config {
                ProviderConfig::Twilio(twilio) => Some((
                    name,
                    crate::api::TwilioReceiver {
                        auth_token: twilio.auth_token,
                        callback_url: twilio.status_callback_url,
                    },
                )),
                _ => None,
            })
            .collect()
    }

    /// The `links` section, its public URL defaulting to `listen` (read
    /// after `--listen` has been applied).
    pub fn links(&self) -> LinksConfig {
        let mut links = self.links.clone();
        links.default_base_url_from(self.listen);
        links
    }

    /// The configuration as TOML with secrets masked, for `herald config`.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if let Some(secret) = &mut shown.links.secret {
            *secret = crate::commands::links::LinkSecret::redacted();
        }
        toml::to_string_pretty(&shown)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

const EXAMPLE_HEADER: &str = "\
# Herald's settings, each at its default: generated by `herald config --defaults`
# (a test keeps this file in step with the code). Put the ones you change in
# herald.toml, or name another file with --config or HERALD_CONFIG.
#
# Later sources win: these defaults, then the file, then the environment.
# A variable is HERALD_ and the key in capitals, with \"__\" between the
# parts of a nested key:
#   HERALD_LISTEN=0.0.0.0:8080
#   HERALD_DELIVERY__LOW_PRIORITY_SHARE=0.5
# or a whole table in TOML's inline form:
#   HERALD_DELIVERY='{low_priority_share=0.5}'
# DATABASE_URL and OTEL_EXPORTER_OTLP_ENDPOINT are read without the prefix.
#
# Settings without a default are not shown: database_url (without it Herald
# runs a private PostgreSQL under data_dir), otel_exporter_otlp_endpoint,
# [ranking.llm], links.secret, links.public_base_url, and [limits]
# messages_per_day, messages_per_month, monthly_budget, monthly_soft_budget.
# Secrets (database_url's password, providers' passwords, keys and tokens,
# ranking.llm.api_key, links.secret, receipts' signing secrets) never print:
# `herald config` and the logs mask them.
";

/// `database_url`, whose password never prints: Debug and serialization (so
/// `herald config` and logs) mask it; only [`DatabaseUrl::expose`] gives the
/// whole URL, to the connection pool.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(raw: impl Into<String>) -> Self {
        DatabaseUrl(raw.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({})", redact_url(&self.0))
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&redact_url(&self.0))
    }
}

/// An address, or `"off"` for none (TOML has no null).
mod address_or_off {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        address: &Option<SocketAddr>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => serializer.collect_str(address),
            None => serializer.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let raw = String::deserialize(deserializer)?;
        if raw == "off" {
            return Ok(None);
        }
        raw.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!("{raw:?} is neither host:port nor \"off\""))
        })
    }
}

/// Masks the password of a connection URL (and any `password=` parameter).
fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "<unparsable URL, not shown>".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("****"));
    }
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if pairs.iter().any(|(k, _)| k == "password") {
        url.query_pairs_mut()
            .clear()
            .extend_pairs(pairs.iter().map(|(k, v)| {
                (
                    k.as_str(),
                    if k == "password" { "****" } else { v.as_str() },
                )
            }));
    }
    url.to_string()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    #[test]
    fn database_password_is_masked() {
        assert_eq!(
            redact_url("postgres://herald:s3cret@db:5432/herald?sslmode=require"),
            "postgres://herald:****@db:5432/herald?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/herald?password=s3cret"),
            "postgres://db/herald?password=****"
        );
        assert_eq!(redact_url("postgres://db/herald"), "postgres://db/herald");
    }

    #[test]
    fn unknown_and_invalid_keys_are_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "listen = \"127.0.0.1:9000\"\nlisten_port = 1\n",
            )?;
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("listen_port"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_LOG_FORMAT", "yaml");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error.contains("log_format") || error.contains("LOG_FORMAT"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn sns_receipts_refuse_to_start_without_a_topic_allow_list() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("herald.toml", "[receipts.sns]\nenabled = true\n")?;
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("receipts.sns.topic_arns"), "{error}");
            jail.create_file(
                "herald.toml",
                "[receipts.sns]\nenabled = true\ntopic_arns = [\"arn:aws:sns:eu-west-1:1:t\"]\n",
            )?;
            assert!(Config::load(None).expect("valid").receipts.sns.enabled);
            Ok(())
        });
    }

    #[test]
    fn metrics_listen_and_cors_origins_are_checked() {
        assert_eq!(
            Config::default().metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "metrics_listen = \"off\"\ncors_origins = [\"https://app.example.com:8443\"]\n",
            )?;
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.metrics_listen, None);
            assert_eq!(
                config.cors_origins,
                [crate::api::CorsOrigin::parse("https://app.example.com:8443").unwrap()]
            );
            // "off" survives `herald config`'s rendering.
            assert!(config.redacted_toml().contains("metrics_listen = \"off\""));
            Ok(())
        });
        for bad in [
            "metrics_listen = \"nowhere\"",
            "cors_origins = [\"https://app.example.com/path\"]",
        ] {
            figment::Jail::expect_with(|jail| {
                jail.create_file("herald.toml", bad)?;
                let error = Config::load(None).unwrap_err().to_string();
                let key = bad.split(' ').next().unwrap();
                assert!(error.contains(key), "{error}");
                Ok(())
            });
        }
    }

    #[test]
    fn a_bad_egress_rule_stops_the_start_with_the_entry_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "[egress]\nallow = [\"127.0.0.1:9000\", \"intranet\"]\n",
            )?;
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("\"intranet\""), "{error}");
            assert!(error.contains("[egress] allow"), "{error}");
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_EGRESS", r#"{allow=["10.20.0.0/16", "[::1]:8080"]}"#);
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.egress.allow.len(), 2);
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/var/lib/herald\"\n",
            )?;
            jail.set_env("HERALD_LISTEN", "0.0.0.0:7000");
            jail.set_env("DATABASE_URL", "postgres://localhost/x");
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.listen, "0.0.0.0:7000".parse().unwrap());
            assert_eq!(config.data_dir, PathBuf::from("/var/lib/herald"));
            assert_eq!(
                config.database_url.as_ref().map(DatabaseUrl::expose),
                Some("postgres://localhost/x")
            );
            assert_eq!(config.log_format, LogFormat::Pretty);
            Ok(())
        });
    }

    #[test]
    fn nested_keys_are_settable_one_by_one_or_as_a_table() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_DELIVERY__LOW_PRIORITY_SHARE", "0.5");
            jail.set_env("HERALD_RECEIPTS__SNS__VERIFY_SIGNATURES", "false");
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.delivery.low_priority_share, 0.5);
            assert!(!config.receipts.sns.verify_signatures);
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_DELIVERY", "{low_priority_share=0.4}");
            let config = Config::load(None).expect("valid config");
            assert_eq!(config.delivery.low_priority_share, 0.4);
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_DELIVERY__LOW_PRIORITY_SHAR", "0.5");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("low_priority_shar"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn routing_to_a_provider_that_is_not_configured_stops_the_start() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "[providers.mail]\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
                 [routing.channels]\nemail = [\"mail\", \"mial\"]\n",
            )?;
            let error = Config::load(None).unwrap_err().to_string();
            assert_eq!(
                error,
                "invalid configuration: routing.channels.email names provider \"mial\", \
                 which is not configured (configured providers: console, inapp, mail, webhook)"
            );
            Ok(())
        });
        for (entry, setting) in [
            (
                "routing.tenant_providers.t_1",
                "[routing.tenant_providers]\nt_1 = [\"console\", \"sms-eu\"]\n",
            ),
            (
                "routing.costs.sms-eu",
                "[routing.costs.sms-eu]\ndefault = 0.05\n",
            ),
        ] {
            figment::Jail::expect_with(|jail| {
                jail.create_file("herald.toml", setting)?;
                let error = Config::load(None).unwrap_err().to_string();
                assert!(
                    error.contains(&format!("{entry} names provider \"sms-eu\"")),
                    "{error}"
                );
                Ok(())
            });
        }
    }

    #[test]
    fn a_twilio_provider_needs_one_sender_and_gets_a_callback_url() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                "[providers.sms]\nkind = \"twilio\"\naccount_sid = \"AC1\"\n\
                 auth_token = \"tw-s3cret\"\n",
            )?;
            let error = Config::load(None).unwrap_err().to_string();
            assert!(
                error
                    .starts_with("invalid configuration: providers.sms: set messaging_service_sid"),
                "{error}"
            );
            jail.create_file(
                "herald.toml",
                "listen = \"0.0.0.0:9000\"\n[providers.sms]\nkind = \"twilio\"\n\
                 account_sid = \"AC1\"\nauth_token = \"tw-s3cret\"\nfrom = \"+15005550006\"\n",
            )?;
            let config = Config::load(None).expect("valid");
            let Some(ProviderConfig::Twilio(twilio)) = config.provider_configs().remove("sms")
            else {
                panic!("a twilio provider")
            };
            assert_eq!(
                twilio.status_callback_url.as_ref().map(|url| url.as_str()),
                Some("http://127.0.0.1:9000/webhooks/twilio/sms")
            );
            let receivers = config.twilio_receivers();
            assert_eq!(receivers["sms"].callback_url, twilio.status_callback_url);
            assert_eq!(receivers["sms"].auth_token.expose(), "tw-s3cret");
            assert!(!config.redacted_toml().contains("tw-s3cret"));
            assert!(!format!("{config:?}").contains("tw-s3cret"));
            Ok(())
        });
    }

    #[test]
    fn secrets_never_print() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "herald.toml",
                r#"
                database_url = "postgres://herald:db-s3cret@db/herald"
                [providers.mail]
                kind = "smtp"
                host = "127.0.0.1"
                username = "herald"
                password = "smtp-s3cret"
                [providers.sns]
                kind = "sns"
                region = "eu-west-1"
                access_key_id = "AKIA"
                secret_access_key = "aws-s3cret"
                [providers.ntfy]
                kind = "ntfy"
                token = "tk_ntfys3cret"
                [links]
                secret = "links-s3cret-links-s3cret-links-s3cret"
                [receipts.providers.acme]
                secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                "#,
            )?;
            let config = Config::load(None).expect("valid config");
            assert_eq!(
                config.database_url.as_ref().map(DatabaseUrl::expose),
                Some("postgres://herald:db-s3cret@db/herald")
            );
            for shown in [format!("{config:?}"), config.redacted_toml()] {
                for secret in ["s3cret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
                    assert!(!shown.contains(secret), "{secret} shown in {shown}");
                }
            }
            Ok(())
        });
    }

    #[test]
    fn herald_example_toml_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/herald.example.toml");
        let committed = std::fs::read_to_string(path).expect("herald.example.toml at the root");
        assert!(
            committed == Config::example_toml(),
            "herald.example.toml is out of date: run \
             `cargo run -- config --defaults > herald.example.toml`"
        );
        // And it reads back as the defaults: every key it shows exists.
        figment::Jail::expect_with(|jail| {
            jail.create_file("herald.toml", &committed)?;
            assert_eq!(Config::load(None).expect("valid config"), Config::default());
            Ok(())
        });
    }
}
