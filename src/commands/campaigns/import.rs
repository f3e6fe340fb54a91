//! Recipients into a campaign: a CSV read as a stream (a body, a file, a
//! URL) or a list. Good rows are stored a batch at a time, each batch with
//! its `CampaignBatchCreated` in one transaction; bad rows are recorded by
//! line with the reason, and the import goes on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::io::AsyncRead;
use uuid::Uuid;

use super::{decide, keep_tables, stream, variable_schema};
use crate::commands::pipeline::{Applied, Executed, Loaded, Step, Transaction};
use crate::commands::{Actor, CommandError};
use crate::domain::ValidationErrors;
use crate::domain::campaign::{
    Campaign, CampaignCommand, CampaignRecipient, CampaignSpec, RowParser, check_listed,
};
use crate::domain::template::VariableSpec;
use crate::domain::values::TenantId;
use crate::egress::{ClientOptions, Egress};
use crate::eventstore::EventStore;

/// At most this many refused rows are kept per import (all are counted).
pub const MAX_STORED_ERRORS: usize = 10_000;
/// At most this many refused rows are returned in an import's answer.
pub const MAX_REPORTED_ERRORS: usize = 100;
/// At most this many recipients per `addCampaignRecipients` call.
pub const MAX_LISTED: usize = 10_000;
/// The longest CSV record (the header included), like an NDJSON line.
pub const MAX_RECORD_BYTES: u64 = crate::commands::ingest::MAX_LINE_BYTES as u64;
/// Redirects a `csvUrl` fetch follows, each hop judged by the egress policy.
const CSV_REDIRECTS: usize = 3;
/// A `csvUrl` fetch that stalls this long fails.
const CSV_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Counters an importer updates as it goes, for a progress display.
#[derive(Debug, Default)]
pub struct ImportProgress {
    pub rows: AtomicU64,
    pub rejected: AtomicU64,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ImportError {
    /// The CSV line (1 is the header), or the list index + 1.
    pub line: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImportSummary {
    pub import_id: Uuid,
    pub accepted: u64,
    pub rejected: u64,
    pub batches: u32,
    /// The first refused rows, by line.
    pub errors: Vec<ImportError>,
    /// Why the import stopped early; what was stored stays.
    pub stopped: Option<String>,
}

/// Imports a CSV with a header row from `input`, read as it arrives, at
/// most `max_bytes` of it and [`MAX_RECORD_BYTES`] per record.
/// Errors before any row is read (unknown campaign, checked before the
/// first byte is read; a started one; a bad header) refuse the whole
/// import; after that, a failing read ends it with `stopped` set and the
/// batches stored so far kept.
#[allow(clippy::too_many_arguments)]
pub async fn import_csv(
    store: &EventStore,
    tenant_id: &TenantId,
    campaign_id: Uuid,
    input: impl AsyncRead + Unpin + Send,
    source: &str,
    max_bytes: u64,
    actor: &Actor,
    progress: &ImportProgress,
) -> Result<ImportSummary, CommandError> {
    require_campaign(store, tenant_id, campaign_id).await?;
    let meter = Arc::new(Meter::default());
    let mut reader = csv_async::AsyncReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .create_reader(Metered {
            input,
            meter: meter.clone(),
            max_bytes,
        });
    let headers = match reader.byte_headers().await {
        Ok(headers) => headers.clone(),
        Err(error) => {
            return Err(field_error(
                "body",
                format!("line 1: cannot read the header: {}", read_failure(&error)),
            ));
        }
    };
    meter.record_done(reader.position().byte());
    let headers: Vec<String> = headers
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    let mut import = Import::begin(store, tenant_id, campaign_id, source, actor).await?;
    let parser = RowParser::new(
        headers,
        &import.spec.address_column,
        import.spec.channel,
        import.schema.clone(),
    )
    .map_err(|reason| field_error("body", reason));
    let parser = match parser {
        Ok(parser) => parser,
        Err(error) => {
            import.finish(Some("the header was refused".into())).await?;
            return Err(error);
        }
    };
    let mut record = csv_async::ByteRecord::new();
    let mut stopped = None;
    loop {
        match reader.read_byte_record(&mut record).await {
            Ok(false) => break,
            Ok(true) => {
                meter.record_done(reader.position().byte());
                let line = meter.line_at(record.position().map_or(0, |p| p.byte()));
                let fields: Result<Vec<&str>, _> = record.iter().map(std::str::from_utf8).collect();
                let parsed = match fields {
                    Ok(fields) => parser.parse(fields.into_iter()),
                    Err(_) => Err("the row is not valid UTF-8".to_string()),
                };
                progress.rows.fetch_add(1, Ordering::Relaxed);
                match parsed {
                    Ok(recipient) => {
                        // Ended, not abandoned: the campaign leaves PROCESSING
                        // with the rows stored so far.
                        if let Err(error) = import.push(line, recipient).await {
                            stopped = Some(format!("storing rows failed: {error}"));
                            break;
                        }
                    }
                    Err(reason) => {
                        progress.rejected.fetch_add(1, Ordering::Relaxed);
                        import.reject(line, reason);
                    }
                }
            }
            Err(error) => {
                stopped = Some(format!(
                    "line {}: reading the CSV failed: {}",
                    meter.line_at(reader.position().byte()),
                    read_failure(&error)
                ));
                break;
            }
        }
    }
    import.finish(stopped).await
}

/// Imports the CSV at `url`, fetched through `egress` (every hop judged)
/// and read as it arrives, once the campaign is known to be the tenant's.
/// A failed fetch names its reason class or status, never what the server said.
#[allow(clippy::too_many_arguments)]
pub async fn import_url(
    store: &EventStore,
    tenant_id: &TenantId,
    campaign_id: Uuid,
    url: &str,
    egress: &Egress,
    max_bytes: u64,
    actor: &Actor,
) -> Result<ImportSummary, CommandError> {
    let url = crate::domain::values::HttpUrl::parse(url.trim())
        .map_err(|error| field_error("csvUrl", error.to_string()))?;
    require_campaign(store, tenant_id, campaign_id).await?;
    super::super::check_urls(egress, [("csvUrl".to_string(), url.as_url())]).await?;
    let fetch_failed =
        |reason: String| field_error("csvUrl", format!("fetching the CSV failed: {reason}"));
    let client = egress
        .client(&ClientOptions {
            timeout: CSV_FETCH_TIMEOUT,
            user_agent: concat!("Herald-Campaigns/", env!("CARGO_PKG_VERSION")).into(),
            max_redirects: CSV_REDIRECTS,
        })
        .map_err(|error| fetch_failed(error.to_string()))?;
    let response = client
        .send(client.request(reqwest::Method::GET, url.as_str()))
        .await
        .map_err(|error| fetch_failed(error.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        return Err(fetch_failed(format!(
            "the server answered HTTP {}",
            status.as_u16()
        )));
    }
    // Chunk by chunk as it arrives: the file is never held whole.
    let body = Box::pin(async_stream::stream! {
        let mut response = response;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => yield Ok(chunk),
                Ok(None) => break,
                Err(error) => {
                    yield Err(std::io::Error::other(error));
                    break;
                }
            }
        }
    });
    let reader = tokio_util::io::StreamReader::new(body);
    import_csv(
        store,
        tenant_id,
        campaign_id,
        reader,
        url.as_str(),
        max_bytes,
        actor,
        &ImportProgress::default(),
    )
    .await
}

/// Not found unless the campaign is the tenant's: checked before a byte of
/// the CSV is fetched or read, so a body sent to someone else's campaign
/// costs nothing.
async fn require_campaign(
    store: &EventStore,
    tenant_id: &TenantId,
    campaign_id: Uuid,
) -> Result<(), CommandError> {
    super::get(store.pool(), tenant_id, campaign_id)
        .await?
        .map(|_| ())
        .ok_or(CommandError::NotFound("campaign"))
}

/// Bytes read so far, where the record being read starts, and the line
/// breaks seen.
#[derive(Debug, Default)]
struct Meter {
    read: AtomicU64,
    record_start: AtomicU64,
    lines: Mutex<Lines>,
}

/// Line breaks counted from the bytes themselves: the CSV reader's own line
/// numbers run one short after a CRLF header or a blank line.
#[derive(Debug, Default)]
struct Lines {
    /// Breaks before the last byte asked about.
    passed: u64,
    /// Offsets of the breaks read ahead of it; the reader's buffer bounds them.
    ahead: VecDeque<u64>,
}

impl Meter {
    /// The next record starts at `byte`.
    fn record_done(&self, byte: u64) {
        self.record_start.store(byte, Ordering::Relaxed);
    }

    fn saw(&self, offset: u64, bytes: &[u8]) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        let breaks = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n');
        lines.ahead.extend(breaks.map(|(i, _)| offset + i as u64));
    }

    /// The line (1 is the first) of a record the reader says starts at
    /// `byte`; asked in order. After a CRLF the reader's record starts at
    /// the `\n`, which ends the line before.
    fn line_at(&self, byte: u64) -> i64 {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        while lines.ahead.front().is_some_and(|at| *at <= byte) {
            lines.ahead.pop_front();
            lines.passed += 1;
        }
        lines.passed as i64 + 1
    }
}

/// Why a read was cut short; carried inside an `io::Error` through the CSV reader.
#[derive(Debug, thiserror::Error)]
enum TooLarge {
    #[error("a record is longer than {MAX_RECORD_BYTES} bytes")]
    Record,
    #[error("the CSV is larger than {0} bytes")]
    Total(u64),
}

/// The CSV reader's input: fails once the record being read, or the whole
/// input, is over its cap, so neither is ever held whole. The CSV reader
/// buffers a little ahead, so a record fails a few KiB past the cap.
struct Metered<R> {
    input: R,
    meter: Arc<Meter>,
    max_bytes: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let read = self.meter.read.load(Ordering::Relaxed);
        let too_large = if read > self.max_bytes {
            Some(TooLarge::Total(self.max_bytes))
        } else if read - self.meter.record_start.load(Ordering::Relaxed).min(read)
            > MAX_RECORD_BYTES
        {
            Some(TooLarge::Record)
        } else {
            None
        };
        if let Some(too_large) = too_large {
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                too_large,
            )));
        }
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.input).poll_read(cx, buf);
        let added = (buf.filled().len() - before) as u64;
        let offset = self.meter.read.fetch_add(added, Ordering::Relaxed);
        self.meter.saw(offset, &buf.filled()[before..]);
        polled
    }
}

/// A read error as a tenant may see it: a cap by name, otherwise the kind
/// of failure, never the text of an upstream error.
fn read_failure(error: &csv_async::Error) -> String {
    match error.kind() {
        csv_async::ErrorKind::Io(io) => match io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<TooLarge>())
        {
            Some(too_large) => too_large.to_string(),
            None if io.kind() == std::io::ErrorKind::TimedOut => "the input stalled".into(),
            None => "the input broke off".into(),
        },
        _ => error.to_string(),
    }
}

/// Adds listed recipients, each checked like a CSV row.
pub async fn add_recipients(
    store: &EventStore,
    tenant_id: &TenantId,
    campaign_id: Uuid,
    recipients: Vec<CampaignRecipient>,
    actor: &Actor,
) -> Result<ImportSummary, CommandError> {
    if recipients.len() > MAX_LISTED {
        return Err(field_error(
            "recipients",
            format!("at most {MAX_LISTED} per call; import a CSV for more"),
        ));
    }
    let mut import = Import::begin(store, tenant_id, campaign_id, "list", actor).await?;
    let mut stopped = None;
    for (index, mut recipient) in recipients.into_iter().enumerate() {
        let line = index as i64 + 1;
        recipient.address = recipient.address.trim().to_string();
        match check_listed(&recipient, import.spec.channel, &import.schema) {
            Ok(()) => {
                if let Err(error) = import.push(line, recipient).await {
                    stopped = Some(format!("storing rows failed: {error}"));
                    break;
                }
            }
            Err(reason) => import.reject(line, reason),
        }
    }
    import.finish(stopped).await
}

/// The rows an import refused, by line.
pub async fn import_errors(
    pool: &PgPool,
    campaign_id: Uuid,
    limit: i64,
) -> Result<Vec<ImportError>, sqlx::Error> {
    sqlx::query_as(
        "SELECT line, reason FROM campaign_import_errors WHERE campaign_id = $1 \
         ORDER BY import_id, line LIMIT $2",
    )
    .bind(campaign_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

fn field_error(path: &str, message: impl Into<String>) -> CommandError {
    let mut errors = ValidationErrors::default();
    errors.add(path, message);
    CommandError::Validation(errors)
}

/// One import in progress: the batch being filled and the refused rows not
/// yet stored.
struct Import<'a> {
    store: &'a EventStore,
    tenant_id: &'a TenantId,
    campaign_id: Uuid,
    actor: &'a Actor,
    import_id: Uuid,
    spec: CampaignSpec,
    schema: BTreeMap<String, VariableSpec>,
    /// The campaign as of the last append, and its stream version.
    state: Campaign,
    version: i64,
    batch: Vec<(i64, CampaignRecipient)>,
    errors: Vec<ImportError>,
    reported: Vec<ImportError>,
    stored_errors: usize,
    accepted: u64,
    rejected: u64,
    batches: u32,
}

impl<'a> Import<'a> {
    async fn begin(
        store: &'a EventStore,
        tenant_id: &'a TenantId,
        campaign_id: Uuid,
        source: &str,
        actor: &'a Actor,
    ) -> Result<Import<'a>, CommandError> {
        let import_id = Uuid::now_v7();
        let source: String = source.chars().take(500).collect();
        let executed = stream(store, tenant_id, campaign_id, actor)
            .execute(
                |campaign: &Campaign| {
                    let command = CampaignCommand::BeginImport {
                        import_id,
                        source: source.clone(),
                    };
                    decide(campaign, tenant_id, command)
                },
                keep_tables_and_state,
            )
            .await?;
        let Loaded { state, version } = match executed {
            Executed::Appended(loaded) | Executed::Unchanged(loaded) => loaded,
        };
        let spec = state
            .spec()
            .cloned()
            .ok_or(CommandError::NotFound("campaign"))?;
        let schema = variable_schema(store.pool(), tenant_id, &spec).await?;
        Ok(Import {
            store,
            tenant_id,
            campaign_id,
            actor,
            import_id,
            spec,
            schema,
            state,
            version,
            batch: Vec::new(),
            errors: Vec::new(),
            reported: Vec::new(),
            stored_errors: 0,
            accepted: 0,
            rejected: 0,
            batches: 0,
        })
    }

    async fn push(&mut self, line: i64, recipient: CampaignRecipient) -> Result<(), CommandError> {
        self.batch.push((line, recipient));
        if self.batch.len() >= self.spec.batch_size as usize {
            self.flush().await?;
        }
        Ok(())
    }

    fn reject(&mut self, line: i64, reason: String) {
        self.rejected += 1;
        let error = ImportError { line, reason };
        if self.reported.len() < MAX_REPORTED_ERRORS {
            self.reported.push(error.clone());
        }
        if self.stored_errors < MAX_STORED_ERRORS {
            self.stored_errors += 1;
            self.errors.push(error);
        }
    }

    /// Stores the filled batch with its event and the refused rows so far;
    /// on a concurrent change, numbers the rows again after what the other
    /// writer stored.
    async fn flush(&mut self) -> Result<(), CommandError> {
        if self.batch.is_empty() {
            if !self.errors.is_empty() {
                store_errors(
                    self.store.pool(),
                    self.campaign_id,
                    self.import_id,
                    &self.errors,
                )
                .await?;
                self.errors.clear();
            }
            return Ok(());
        }
        let known = Loaded {
            state: self.state.clone(),
            version: self.version,
        };
        let messages = self.batch.len() as u32;
        let this = &*self;
        let executed = stream(self.store, self.tenant_id, self.campaign_id, self.actor)
            .execute_from(
                Some(known),
                |campaign: &Campaign| {
                    let command = CampaignCommand::AddBatch {
                        import_id: this.import_id,
                        messages,
                    };
                    decide(campaign, this.tenant_id, command)
                },
                |tx, applied| {
                    Box::pin(async move {
                        let after = keep_tables_and_state(tx, applied).await?;
                        let first_row = after.state.messages() - u64::from(messages);
                        let batch_no = after.state.batches() - 1;
                        this.store_batch(tx.connection(), first_row as i64, batch_no as i32)
                            .await?;
                        store_errors(
                            tx.connection(),
                            this.campaign_id,
                            this.import_id,
                            &this.errors,
                        )
                        .await?;
                        Ok(after)
                    })
                },
            )
            .await?;
        let (Executed::Appended(loaded) | Executed::Unchanged(loaded)) = executed;
        self.state = loaded.state;
        self.version = loaded.version;
        self.accepted += self.batch.len() as u64;
        self.batches += 1;
        self.batch.clear();
        self.errors.clear();
        Ok(())
    }

    /// The batch's messages, numbered from `first_row`.
    async fn store_batch(
        &self,
        conn: &mut PgConnection,
        first_row: i64,
        batch_no: i32,
    ) -> Result<(), sqlx::Error> {
        let mut rows = Vec::with_capacity(self.batch.len());
        let mut lines = Vec::with_capacity(self.batch.len());
        let mut addresses = Vec::with_capacity(self.batch.len());
        let mut variables = Vec::with_capacity(self.batch.len());
        for (index, (line, recipient)) in self.batch.iter().enumerate() {
            rows.push(first_row + index as i64);
            lines.push(*line);
            addresses.push(recipient.address.as_str());
            variables.push(Value::Object(recipient.variables.clone()).to_string());
        }
        sqlx::query(
            "INSERT INTO campaign_messages (campaign_id, row_no, batch_no, line, address, variables) \
             SELECT $1, r.row_no, $2, r.line, r.address, r.variables::jsonb \
             FROM unnest($3::int8[], $4::int8[], $5::text[], $6::text[]) \
                 AS r(row_no, line, address, variables)",
        )
        .bind(self.campaign_id)
        .bind(batch_no)
        .bind(&rows)
        .bind(&lines)
        .bind(&addresses)
        .bind(&variables)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn finish(mut self, stopped: Option<String>) -> Result<ImportSummary, CommandError> {
        self.flush().await?;
        let command = || CampaignCommand::FinishImport {
            import_id: self.import_id,
            accepted: self.accepted,
            rejected: self.rejected,
            error: stopped.clone(),
        };
        stream(self.store, self.tenant_id, self.campaign_id, self.actor)
            .execute(
                |campaign: &Campaign| decide(campaign, self.tenant_id, command()),
                keep_tables,
            )
            .await?;
        Ok(ImportSummary {
            import_id: self.import_id,
            accepted: self.accepted,
            rejected: self.rejected,
            batches: self.batches,
            errors: self.reported,
            stopped,
        })
    }
}

/// Refused rows of the import; a row stored before is kept as it was.
async fn store_errors<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    campaign_id: Uuid,
    import_id: Uuid,
    errors: &[ImportError],
) -> Result<(), sqlx::Error> {
    if errors.is_empty() {
        return Ok(());
    }
    let lines: Vec<i64> = errors.iter().map(|e| e.line).collect();
    let reasons: Vec<&str> = errors.iter().map(|e| e.reason.as_str()).collect();
    sqlx::query(
        "INSERT INTO campaign_import_errors (campaign_id, import_id, line, reason) \
         SELECT $1, $2, r.line, r.reason FROM unnest($3::int8[], $4::text[]) AS r(line, reason) \
         ON CONFLICT DO NOTHING",
    )
    .bind(campaign_id)
    .bind(import_id)
    .bind(&lines)
    .bind(&reasons)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`keep_tables`], handing back the campaign as the append left it.
fn keep_tables_and_state<'c>(
    tx: &'c mut Transaction<'_>,
    applied: &'c Applied<Campaign>,
) -> Step<'c, Loaded<Campaign>> {
    Box::pin(async move {
        keep_tables(tx, applied).await?;
        Ok(Loaded {
            state: applied.state.clone(),
            version: applied.version,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each record's line as `import_csv` reports it.
    async fn lines(csv: &str) -> Vec<i64> {
        let meter = Arc::new(Meter::default());
        let mut reader = csv_async::AsyncReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .create_reader(Metered {
                input: csv.as_bytes(),
                meter: meter.clone(),
                max_bytes: u64::MAX,
            });
        reader.byte_headers().await.expect("a header");
        let mut record = csv_async::ByteRecord::new();
        let mut lines = Vec::new();
        while reader
            .read_byte_record(&mut record)
            .await
            .expect("a record")
        {
            lines.push(meter.line_at(record.position().map_or(0, |p| p.byte())));
        }
        lines
    }

    #[tokio::test]
    async fn rows_are_numbered_by_file_line_with_the_header_as_line_1() {
        assert_eq!(lines("a,b\n1,2\n3,4\n").await, [2, 3]);
        assert_eq!(lines("a,b\r\n1,2\r\n3,4\r\n").await, [2, 3], "CRLF");
        assert_eq!(lines("a,b\n\n1,2\n\n3,4").await, [3, 5], "blank lines");
        assert_eq!(
            lines("a,b\n\"x\r\ny\",2\n3,4\n").await,
            [2, 4],
            "a quoted break"
        );
        assert_eq!(lines("\u{feff}a,b\r\n1,2\r\n").await, [2], "a BOM");
    }
}
