//! Every test that touches storage gets a fresh, migrated database of its own,
//! cloned from a migrated template. The server is `DATABASE_URL` when set, else
//! a private PostgreSQL cluster under the temp dir, shared by every test process
//! of a run and stopped by the last one to exit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use herald::database::{EmbeddedOptions, EmbeddedPostgres, MIGRATOR};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

struct Server {
    admin: PgConnectOptions,
    template: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static CLUSTER: std::sync::OnceLock<EmbeddedPostgres> = std::sync::OnceLock::new();
static NEXT_DATABASE: AtomicUsize = AtomicUsize::new(0);

pub struct TestDatabase {
    pub pool: PgPool,
    pub options: PgConnectOptions,
}

/// A fresh database with every migration applied.
pub async fn fresh_database() -> TestDatabase {
    let server = SERVER.get_or_init(start_server).await;
    let name = format!(
        "herald_test_{}_{}",
        std::process::id(),
        NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = server
        .admin
        .connect()
        .await
        .expect("connect to the test server");
    let create = format!("CREATE DATABASE {name} TEMPLATE {}", server.template);
    // Concurrent clones of one template can briefly collide; they succeed on retry.
    let mut attempt = 0;
    loop {
        match sqlx::query(sqlx::AssertSqlSafe(create.clone()))
            .execute(&mut admin)
            .await
        {
            Ok(_) => break,
            Err(error) if attempt < 50 => {
                attempt += 1;
                tracing::debug!(%error, "retrying CREATE DATABASE");
                tokio::time::sleep(Duration::from_millis(50 + attempt * 10)).await;
            }
            Err(error) => panic!("cannot create test database {name}: {error}"),
        }
    }
    admin.close().await.ok();
    let options = server.admin.clone().database(&name);
    let pool = PgPoolOptions::new()
        .max_connections(30)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options.clone())
        .await
        .expect("connect to the test database");
    TestDatabase { pool, options }
}

async fn start_server() -> Server {
    let admin = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url
            .parse::<PgConnectOptions>()
            .expect("DATABASE_URL must be a PostgreSQL URL"),
        _ => {
            let dir = std::env::temp_dir().join(format!(
                "herald-test-pg-{:x}",
                short_hash(env!("CARGO_MANIFEST_DIR"))
            ));
            let cluster = EmbeddedPostgres::start_shared(
                &dir,
                EmbeddedOptions {
                    max_connections: 400,
                    fast_unsafe: true,
                },
            )
            .await
            .expect("start the embedded test cluster");
            let admin = cluster.connect_options("postgres");
            if CLUSTER.set(cluster).is_ok() {
                // SAFETY: registering a plain extern "C" fn with atexit has no preconditions.
                unsafe { libc::atexit(stop_cluster_if_last) };
            }
            admin
        }
    };
    let admin = admin.log_statements(tracing::log::LevelFilter::Debug);
    let mut conn = admin.connect().await.expect("connect to the test server");
    drop_databases_of_finished_runs(&mut conn).await;
    let template = ensure_template(&admin, &mut conn).await;
    conn.close().await.ok();
    Server { admin, template }
}

extern "C" fn stop_cluster_if_last() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop_if_last_user();
    }
}

/// The template is named after the migrations, so a schema change builds a new one.
async fn ensure_template(admin: &PgConnectOptions, conn: &mut PgConnection) -> String {
    let migrations: String = MIGRATOR
        .iter()
        .map(|m| format!("{}{}", m.version, m.sql.as_str()))
        .collect();
    let template = format!("herald_template_{:x}", short_hash(&migrations));
    sqlx::query("SELECT pg_advisory_lock(hashtext('herald test template'))")
        .execute(&mut *conn)
        .await
        .expect("lock the template");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&template)
            .fetch_one(&mut *conn)
            .await
            .expect("look up the template");
    if !exists {
        let building = format!("{template}_building");
        for sql in [
            format!("DROP DATABASE IF EXISTS {building}"),
            format!("CREATE DATABASE {building}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await
                .expect("create the template");
        }
        let mut template_conn = admin
            .clone()
            .database(&building)
            .connect()
            .await
            .expect("connect to the template");
        MIGRATOR
            .run(&mut template_conn)
            .await
            .expect("migrate the template");
        template_conn.close().await.ok();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {building} RENAME TO {template}"
        )))
        .execute(&mut *conn)
        .await
        .expect("publish the template");
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('herald test template'))")
        .execute(&mut *conn)
        .await
        .expect("unlock the template");
    template
}

/// Test databases are named after their process; drop those whose process is gone.
async fn drop_databases_of_finished_runs(conn: &mut PgConnection) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'herald\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let pid = name
            .split('_')
            .nth(2)
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

fn short_hash(text: &str) -> u64 {
    // FNV-1a: stable across runs and toolchains, unlike std's DefaultHasher.
    text.bytes().fold(0xcbf29ce484222325u64, |hash, byte| {
        (hash ^ byte as u64).wrapping_mul(0x100000001b3)
    })
}

/// `[egress] allow` for the suite's local peers (webhook receivers, file
/// and CSV servers), which all listen on loopback. Hostile tests use a
/// configuration without it.
pub fn loopback_egress() -> herald::egress::EgressConfig {
    herald::egress::EgressConfig {
        allow: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
    }
}

/// The HTTP API on an ephemeral loopback port, over a fresh database.
pub struct TestApp {
    pub base: String,
    pub options: PgConnectOptions,
    pub store: herald::eventstore::EventStore,
    pub http: reqwest::Client,
}

impl TestApp {
    /// With the suite's peers on loopback allowed.
    pub async fn start() -> TestApp {
        TestApp::start_with(&herald::config::Config {
            egress: loopback_egress(),
            ..herald::config::Config::default()
        })
        .await
    }

    /// The API as `config` sets it up.
    pub async fn start_with(config: &herald::config::Config) -> TestApp {
        TestApp::start_with_operators(config, 0).await.0
    }

    /// The API with `config`, and `operators` tenants made before it starts
    /// (so their ids can be its `operator_tenants`) with their admin keys.
    pub async fn start_with_operators(
        config: &herald::config::Config,
        operators: usize,
    ) -> (TestApp, Vec<herald::commands::tenants::CreatedTenant>) {
        let mut config = config.clone();
        let db = fresh_database().await;
        herald::database::MIGRATOR
            .run(&db.pool)
            .await
            .expect("migrated");
        let store = herald::eventstore::EventStore::new(db.pool.clone());
        let mut created = Vec::new();
        for _ in 0..operators {
            let tenant = herald::commands::tenants::create_tenant(
                &store,
                "Operators",
                &herald::commands::Actor::new("test"),
            )
            .await
            .expect("operator tenant created");
            config.operator_tenants.push(tenant.tenant_id.to_string());
            created.push(tenant);
        }
        let options = config.api_options();
        let state = herald::api::ApiState::new(store.clone(), &options)
            .await
            .expect("API state");
        let app = herald::api::router(state, &options);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let app = TestApp {
            base,
            options: db.options.clone(),
            store,
            http: reqwest::Client::new(),
        };
        (app, created)
    }

    /// A URL for the test database, for running the `herald` binary against it.
    pub fn database_url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// A new tenant and its admin key.
    pub async fn tenant(&self) -> (String, String) {
        let created = herald::commands::tenants::create_tenant(
            &self.store,
            "Test tenant",
            &herald::commands::Actor::new("test"),
        )
        .await
        .expect("tenant created");
        (created.tenant_id.to_string(), created.api_key)
    }

    /// Runs a GraphQL operation as `key`, when given; the whole response body.
    pub async fn graphql(&self, key: Option<&str>, query: &str, variables: Value) -> Value {
        graphql(&self.http, &self.base, key, query, variables).await
    }
}

/// The suite's one GraphQL call: `query` to `base`'s `/graphql`, as `key`
/// when given; the whole response body, errors included.
pub async fn graphql(
    http: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = http
        .post(format!("{base}/graphql"))
        .json(&serde_json::json!({ "query": query, "variables": variables }));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("JSON response")
}

/// The `data` of a GraphQL response that must have no errors.
pub fn data(response: Value) -> Value {
    assert!(response["errors"].is_null(), "{response:#}");
    response["data"].clone()
}

/// The suite's one way to wait: runs `check` until it answers `Ok`, and
/// fails with its last `Err` (what it saw instead) once `within` has
/// passed. Tests wait on a condition, never for a guessed time; the checks
/// come quickly at first, then every 200 ms.
pub async fn eventually<T, E: std::fmt::Display>(
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        match check().await {
            Ok(done) => return done,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {within:?}: {seen}"
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// A log position as the API writes it: the `Position` scalar, a string of digits.
pub fn position(value: &serde_json::Value) -> i64 {
    value
        .as_str()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("a Position (a string of digits), not {value}"))
}

/// The `extensions.code` of every error in a GraphQL response.
pub fn error_codes(response: &serde_json::Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    e["extensions"]["code"]
                        .as_str()
                        .unwrap_or("<none>")
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Appends an event to the end of a stream as it is, past the domain: how
/// a malformed or future-version event gets into the log. Its position.
pub async fn append_raw(
    store: &herald::eventstore::EventStore,
    stream_id: &str,
    tenant_id: &str,
    event_type: &str,
    schema_version: i16,
    payload: serde_json::Value,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO events (stream_id, stream_version, event_id, event_type, schema_version, tenant_id, payload, metadata) \
         SELECT $1, COALESCE(max(stream_version), 0) + 1, gen_random_uuid(), $2, $3, $4, $5, '{}' \
         FROM events WHERE stream_id = $1 RETURNING global_position",
    )
    .bind(stream_id)
    .bind(event_type)
    .bind(schema_version)
    .bind(tenant_id)
    .bind(payload)
    .fetch_one(store.pool())
    .await
    .expect("raw event appended")
}

/// Waits until every event stored so far is readable by projections and
/// rebuilds: their horizon is the cluster's oldest running transaction, and
/// tests running beside this one on the same cluster hold it back a moment.
pub async fn wait_until_readable(store: &herald::eventstore::EventStore) {
    let newest: Option<i64> =
        sqlx::query_scalar("SELECT max(transaction_id::text::int8) FROM events")
            .fetch_one(store.pool())
            .await
            .expect("newest event");
    let Some(newest) = newest else { return };
    eventually(Duration::from_secs(30), async || {
        let horizon = store.horizon().await.expect("horizon").transaction_id;
        if horizon > newest {
            Ok(())
        } else {
            Err(format!(
                "another transaction keeps the events unreadable (horizon {horizon}, newest {newest})"
            ))
        }
    })
    .await;
}
