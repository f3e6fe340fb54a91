//! `herald tenants ...`: create tenants and manage their API keys. Output is
//! JSON on stdout, so scripts can read it; secrets are shown once.

use serde_json::json;

use crate::commands::{self, Actor};
use crate::config::Config;
use crate::domain::Scope;
use crate::domain::values::{ApiKeyId, TenantId};
use crate::eventstore::EventStore;

#[derive(Debug, clap::Subcommand)]
pub enum TenantsCommand {
    /// Create a tenant; prints {"tenant_id", "api_key"} (an admin key, shown once).
    Create {
        #[arg(long)]
        name: String,
    },
    /// List tenants.
    List,
    /// Issue an API key; prints {"key_id", "api_key", "scopes"} (shown once).
    IssueKey {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// Comma-separated: send, read, ops, admin.
        #[arg(long, value_delimiter = ',', default_value = "send,read")]
        scopes: Vec<String>,
    },
    /// Revoke an API key.
    RevokeKey {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        key: String,
    },
    /// List a tenant's keys (never their secrets).
    Keys {
        #[arg(long)]
        tenant: String,
    },
}

pub async fn run(config: &Config, command: TenantsCommand) -> anyhow::Result<()> {
    super::with_store(
        config,
        |store| async move { execute(&store, command).await },
    )
    .await
}

async fn execute(store: &EventStore, command: TenantsCommand) -> anyhow::Result<()> {
    let actor = Actor::new("cli");
    let output = match command {
        TenantsCommand::Create { name } => {
            let created = commands::tenants::create_tenant(store, &name, &actor)
                .await
                .map_err(describe)?;
            json!({ "tenant_id": created.tenant_id, "api_key": created.api_key, "key_id": created.key_id })
        }
        TenantsCommand::List => {
            let rows: Vec<(String, String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                "SELECT tenant_id, name, created_at FROM tenants ORDER BY created_at",
            )
            .fetch_all(store.pool())
            .await?;
            json!(
                rows.into_iter()
                    .map(
                        |(id, name, at)| json!({ "tenant_id": id, "name": name, "created_at": at })
                    )
                    .collect::<Vec<_>>()
            )
        }
        TenantsCommand::IssueKey {
            tenant,
            name,
            scopes,
        } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let scopes = scopes
                .iter()
                .map(|s| Scope::parse(s.trim()).map_err(|e| anyhow::anyhow!("--scopes: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let issued = commands::tenants::issue_api_key(store, &tenant, &name, scopes, &actor)
                .await
                .map_err(describe)?;
            json!({ "key_id": issued.key_id, "api_key": issued.api_key, "scopes": issued.scopes })
        }
        TenantsCommand::RevokeKey { tenant, key } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let key = ApiKeyId::parse(&key).map_err(|e| anyhow::anyhow!("--key: {e}"))?;
            commands::tenants::revoke_api_key(store, &tenant, key, &actor)
                .await
                .map_err(describe)?;
            json!({ "revoked": key })
        }
        TenantsCommand::Keys { tenant } => {
            let tenant = TenantId::parse(&tenant).map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
            let keys = commands::tenants::list_api_keys(store.pool(), &tenant).await?;
            json!(
                keys.into_iter()
                    .map(|k| json!({
                        "key_id": k.key_id, "name": k.name, "prefix": k.prefix, "scopes": k.scopes,
                        "created_at": k.created_at, "revoked_at": k.revoked_at,
                    }))
                    .collect::<Vec<_>>()
            )
        }
    };
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

/// Validation errors list every field; other errors say what they are.
fn describe(error: commands::CommandError) -> anyhow::Error {
    match error {
        commands::CommandError::Validation(errors) => anyhow::anyhow!("invalid input: {errors}"),
        other => anyhow::anyhow!(other),
    }
}
