//! The `Campaign` aggregate: one template sent to many recipients read
//! from a CSV or a list, split into batches of messages (campaign → batch →
//! message); a released message is a notification and reports its status from there.
//!
//! | command | legal when | records |
//! |---|---|---|
//! | Create | the campaign does not exist | CampaignCreated |
//! | BeginImport | accepted, processing or scheduled | CampaignImportStarted |
//! | AddBatch | processing | CampaignBatchCreated |
//! | FinishImport | processing | CampaignImportFinished |
//! | Start | scheduled, at or after `schedule_at` | CampaignStarted |
//! | ReleaseBatch | sending, the next batch in order | CampaignBatchReleased (+ CampaignAllReleased after the last) |
//! | ReachProgress | sending, paused or sent, each step above the last, in order | CampaignProgressReached per step |
//! | Complete | sent | CampaignCompleted |
//! | Pause | scheduled, sending or sent | CampaignPaused |
//! | Resume | paused | CampaignResumed |
//! | Cancel | not completed nor cancelled | CampaignCancelled |
//!
//! Statuses: ACCEPTED → PROCESSING → SCHEDULED → SENDING → SENT →
//! COMPLETED, and `Paused` / `Cancelled` for control.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::aggregate::Aggregate;
use super::domain_error::DomainError;
use super::notification::clip;
use super::tagged_payload::upcast_current;
use super::template::{VariableSpec, VariableType, check_variables};
use super::validation_errors::ValidationErrors;
use super::values::{
    Category, Channel, EmailAddress, HttpUrl, PhoneNumber, TemplateKey, TemplateVersion, TenantId,
};

pub const MAX_NAME_CHARS: usize = 200;
pub const DEFAULT_ADDRESS_COLUMN: &str = "email";
pub const DEFAULT_BATCH_SIZE: u32 = 1_000;
pub const MAX_BATCH_SIZE: u32 = 10_000;
pub const MAX_PROGRESS_STEPS: usize = 20;
/// A CSV wider than this is refused at its header: each column becomes a
/// template variable of every message.
pub const MAX_COLUMNS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CampaignStatus {
    /// Created; no recipients yet.
    Accepted,
    /// Recipients are being imported.
    Processing,
    /// Has recipients; waits for its `schedule_at`.
    Scheduled,
    /// Started: batches are being released.
    Sending,
    Paused,
    /// Every batch is released.
    Sent,
    /// Every message reached an outcome.
    Completed,
    Cancelled,
}

impl CampaignStatus {
    pub const ALL: [CampaignStatus; 8] = [
        CampaignStatus::Accepted,
        CampaignStatus::Processing,
        CampaignStatus::Scheduled,
        CampaignStatus::Sending,
        CampaignStatus::Paused,
        CampaignStatus::Sent,
        CampaignStatus::Completed,
        CampaignStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Accepted => "ACCEPTED",
            CampaignStatus::Processing => "PROCESSING",
            CampaignStatus::Scheduled => "SCHEDULED",
            CampaignStatus::Sending => "SENDING",
            CampaignStatus::Paused => "PAUSED",
            CampaignStatus::Sent => "SENT",
            CampaignStatus::Completed => "COMPLETED",
            CampaignStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(stored: &str) -> Option<CampaignStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == stored)
    }
}

/// A batch's status: created whole by one import
/// chunk, so it is `Ready` at once; `Sent` once released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Ready,
    Sent,
    Cancelled,
}

impl BatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Ready => "READY",
            BatchStatus::Sent => "SENT",
            BatchStatus::Cancelled => "CANCELLED",
        }
    }
}

/// What a tenant asks for, as received; [`parse`](Self::parse) is the only
/// way to a [`CampaignSpec`].
#[derive(Debug, Clone, Default)]
pub struct CreateCampaign {
    pub name: String,
    pub template_key: String,
    pub template_version: Option<u32>,
    pub channel: String,
    pub category: Option<String>,
    pub schedule_at: Option<DateTime<Utc>>,
    pub callback_url: Option<String>,
    pub address_column: Option<String>,
    pub progress_steps: Vec<i32>,
    pub batch_size: Option<u32>,
}

/// A valid campaign definition. The template version is pinned by the
/// command side before the campaign is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub name: String,
    pub template_key: TemplateKey,
    pub template_version: Option<TemplateVersion>,
    pub channel: Channel,
    pub category: Category,
    /// None: as soon as the recipients are in.
    pub schedule_at: Option<DateTime<Utc>>,
    pub callback_url: Option<HttpUrl>,
    pub address_column: String,
    /// Percentages of messages with an outcome, ascending, each 1–99.
    pub progress_steps: Vec<u8>,
    pub batch_size: u32,
}

impl CreateCampaign {
    /// Every refused field at once, with its path.
    pub fn parse(self) -> Result<CampaignSpec, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let name = self.name.trim().to_string();
        if name.is_empty() {
            errors.add("name", "is required");
        } else if name.chars().count() > MAX_NAME_CHARS {
            errors.add(
                "name",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
        } else if name.chars().any(char::is_control) {
            errors.add("name", "must not contain control characters");
        }
        let template_key = errors.check("template.key", TemplateKey::parse(&self.template_key));
        let template_version = self
            .template_version
            .and_then(|v| errors.check("template.version", TemplateVersion::parse(v)));
        let channel = errors.check("channel", Channel::parse(&self.channel));
        if let Some(channel) = channel
            && !matches!(channel, Channel::Email | Channel::Sms)
        {
            errors.add("channel", "campaigns send on email or sms");
        }
        let category = errors.check(
            "category",
            Category::parse(self.category.as_deref().unwrap_or("marketing")),
        );
        let callback_url = self
            .callback_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .and_then(|url| errors.check("callbackUrl", HttpUrl::parse(url)));
        let address_column = self
            .address_column
            .as_deref()
            .map(str::trim)
            .unwrap_or(DEFAULT_ADDRESS_COLUMN)
            .to_string();
        if address_column.is_empty() {
            errors.add("addressColumn", "must not be empty");
        } else if address_column.chars().count() > MAX_NAME_CHARS {
            errors.add(
                "addressColumn",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
        } else if address_column.chars().any(char::is_control) {
            errors.add("addressColumn", "must not contain control characters");
        }
        let mut progress_steps = Vec::new();
        if self.progress_steps.len() > MAX_PROGRESS_STEPS {
            errors.add(
                "progressSteps",
                format!("at most {MAX_PROGRESS_STEPS} steps"),
            );
        }
        for (index, step) in self.progress_steps.iter().enumerate() {
            match u8::try_from(*step) {
                Ok(step @ 1..=99) => progress_steps.push(step),
                _ => errors.add(
                    format!("progressSteps[{index}]"),
                    "must be a percentage between 1 and 99",
                ),
            }
        }
        progress_steps.sort_unstable();
        progress_steps.dedup();
        let batch_size = self.batch_size.unwrap_or(DEFAULT_BATCH_SIZE);
        if !(1..=MAX_BATCH_SIZE).contains(&batch_size) {
            errors.add(
                "batchSize",
                format!("must be between 1 and {MAX_BATCH_SIZE}"),
            );
        }
        match (template_key, channel, category) {
            (Some(template_key), Some(channel), Some(category)) if errors.is_empty() => {
                Ok(CampaignSpec {
                    name,
                    template_key,
                    template_version,
                    channel,
                    category,
                    schedule_at: self.schedule_at,
                    callback_url,
                    address_column,
                    progress_steps,
                    batch_size,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Counts of a campaign's messages by outcome, as sent in callbacks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignSummary {
    pub total_messages: u64,
    /// Not yet released or still on the way.
    pub pending: u64,
    pub sent: u64,
    pub delivered: u64,
    pub bounced: u64,
    pub complained: u64,
    /// Rejected, suppressed, expired or dead-lettered.
    pub failed: u64,
    pub cancelled: u64,
}

impl CampaignSummary {
    /// Messages with an outcome, in whole percent of all of them.
    pub fn percent_done(&self) -> u8 {
        if self.total_messages == 0 {
            return 100;
        }
        let done = self.total_messages.saturating_sub(self.pending);
        ((done * 100) / self.total_messages).min(100) as u8
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CampaignEvent {
    #[serde(rename = "CampaignCreated")]
    Created {
        tenant_id: TenantId,
        id: Uuid,
        spec: Box<CampaignSpec>,
    },
    #[serde(rename = "CampaignImportStarted")]
    ImportStarted { import_id: Uuid, source: String },
    /// One chunk of good rows stored as a batch of messages.
    #[serde(rename = "CampaignBatchCreated")]
    BatchCreated {
        import_id: Uuid,
        batch: u32,
        messages: u32,
    },
    #[serde(rename = "CampaignImportFinished")]
    ImportFinished {
        import_id: Uuid,
        accepted: u64,
        rejected: u64,
        /// Why the import stopped early, if it did; the batches stored stay.
        error: Option<String>,
    },
    #[serde(rename = "CampaignStarted")]
    Started { at: DateTime<Utc> },
    #[serde(rename = "CampaignBatchReleased")]
    BatchReleased { batch: u32 },
    #[serde(rename = "CampaignAllReleased")]
    AllReleased,
    #[serde(rename = "CampaignProgressReached")]
    ProgressReached { step: u8, summary: CampaignSummary },
    #[serde(rename = "CampaignCompleted")]
    Completed { summary: CampaignSummary },
    #[serde(rename = "CampaignPaused")]
    Paused,
    #[serde(rename = "CampaignResumed")]
    Resumed,
    #[serde(rename = "CampaignCancelled")]
    Cancelled { reason: Option<String> },
}

impl CampaignEvent {
    pub const SCHEMA_VERSION: i16 = 1;

    pub const EVENT_TYPES: [&'static str; 12] = [
        "CampaignCreated",
        "CampaignImportStarted",
        "CampaignBatchCreated",
        "CampaignImportFinished",
        "CampaignStarted",
        "CampaignBatchReleased",
        "CampaignAllReleased",
        "CampaignProgressReached",
        "CampaignCompleted",
        "CampaignPaused",
        "CampaignResumed",
        "CampaignCancelled",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            CampaignEvent::Created { .. } => "CampaignCreated",
            CampaignEvent::ImportStarted { .. } => "CampaignImportStarted",
            CampaignEvent::BatchCreated { .. } => "CampaignBatchCreated",
            CampaignEvent::ImportFinished { .. } => "CampaignImportFinished",
            CampaignEvent::Started { .. } => "CampaignStarted",
            CampaignEvent::BatchReleased { .. } => "CampaignBatchReleased",
            CampaignEvent::AllReleased => "CampaignAllReleased",
            CampaignEvent::ProgressReached { .. } => "CampaignProgressReached",
            CampaignEvent::Completed { .. } => "CampaignCompleted",
            CampaignEvent::Paused => "CampaignPaused",
            CampaignEvent::Resumed => "CampaignResumed",
            CampaignEvent::Cancelled { .. } => "CampaignCancelled",
        }
    }

    pub fn upcast(
        event_type: &str,
        schema_version: i16,
        payload: Value,
    ) -> Result<CampaignEvent, DomainError> {
        upcast_current(
            event_type,
            schema_version,
            payload,
            &Self::EVENT_TYPES,
            Self::SCHEMA_VERSION,
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CampaignCommand {
    Create {
        tenant_id: TenantId,
        id: Uuid,
        spec: Box<CampaignSpec>,
    },
    BeginImport {
        import_id: Uuid,
        source: String,
    },
    AddBatch {
        import_id: Uuid,
        messages: u32,
    },
    FinishImport {
        import_id: Uuid,
        accepted: u64,
        rejected: u64,
        error: Option<String>,
    },
    Start,
    ReleaseBatch {
        batch: u32,
    },
    ReachProgress {
        summary: CampaignSummary,
    },
    Complete {
        summary: CampaignSummary,
    },
    Pause,
    Resume,
    Cancel {
        reason: Option<String>,
    },
}

/// A campaign's state; `Default` is one not yet created.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Campaign {
    created: Option<(TenantId, Uuid, CampaignSpec)>,
    status: Option<CampaignStatus>,
    /// Imports open now; the campaign is `Processing` while any is.
    open_imports: Vec<Uuid>,
    batches: u32,
    released: u32,
    messages: u64,
    rejected: u64,
    progress_reached: u8,
    started_at: Option<DateTime<Utc>>,
    /// The status a pause interrupted, to resume into.
    paused_from: Option<CampaignStatus>,
}

impl Campaign {
    pub fn tenant_id(&self) -> Option<&TenantId> {
        self.created.as_ref().map(|(tenant_id, _, _)| tenant_id)
    }

    pub fn id(&self) -> Option<Uuid> {
        self.created.as_ref().map(|(_, id, _)| *id)
    }

    pub fn spec(&self) -> Option<&CampaignSpec> {
        self.created.as_ref().map(|(_, _, spec)| spec)
    }

    pub fn status(&self) -> Option<CampaignStatus> {
        self.status
    }

    /// Batches created so far; numbered from 0.
    pub fn batches(&self) -> u32 {
        self.batches
    }

    /// Batches released so far: the next to release is this number.
    pub fn released(&self) -> u32 {
        self.released
    }

    pub fn messages(&self) -> u64 {
        self.messages
    }

    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    pub fn progress_reached(&self) -> u8 {
        self.progress_reached
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    fn illegal(&self, message: &'static str) -> DomainError {
        match self.status {
            None => DomainError::InvalidCommand("the campaign does not exist"),
            Some(_) => DomainError::InvalidCommand(message),
        }
    }
}

impl Aggregate for Campaign {
    type Command = CampaignCommand;
    type Event = CampaignEvent;
    type Error = DomainError;

    fn apply(&mut self, event: &CampaignEvent) {
        use CampaignStatus as S;
        match event {
            CampaignEvent::Created {
                tenant_id,
                id,
                spec,
            } => {
                self.created = Some((tenant_id.clone(), *id, (**spec).clone()));
                self.status = Some(S::Accepted);
            }
            CampaignEvent::ImportStarted { import_id, .. } => {
                self.open_imports.push(*import_id);
                self.status = Some(S::Processing);
            }
            CampaignEvent::BatchCreated { messages, .. } => {
                self.batches += 1;
                self.messages += u64::from(*messages);
            }
            CampaignEvent::ImportFinished {
                import_id,
                rejected,
                ..
            } => {
                self.open_imports.retain(|open| open != import_id);
                self.rejected += rejected;
                if self.open_imports.is_empty() && self.status == Some(S::Processing) {
                    self.status = Some(if self.batches > 0 {
                        S::Scheduled
                    } else {
                        S::Accepted
                    });
                }
            }
            CampaignEvent::Started { at } => {
                self.started_at = Some(*at);
                self.status = Some(S::Sending);
            }
            CampaignEvent::BatchReleased { .. } => self.released += 1,
            CampaignEvent::AllReleased => self.status = Some(S::Sent),
            CampaignEvent::ProgressReached { step, .. } => self.progress_reached = *step,
            CampaignEvent::Completed { .. } => self.status = Some(S::Completed),
            CampaignEvent::Paused => {
                self.paused_from = self.status;
                self.status = Some(S::Paused);
            }
            CampaignEvent::Resumed => {
                self.status = self.paused_from.take().or(Some(S::Scheduled));
            }
            CampaignEvent::Cancelled { .. } => self.status = Some(S::Cancelled),
        }
    }

    fn decide(
        &self,
        command: CampaignCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<CampaignEvent>, DomainError> {
        use CampaignStatus as S;
        let status = self.status;
        match command {
            CampaignCommand::Create {
                tenant_id,
                id,
                spec,
            } => match status {
                None => Ok(vec![CampaignEvent::Created {
                    tenant_id,
                    id,
                    spec,
                }]),
                Some(_) => Err(DomainError::InvalidCommand("the campaign already exists")),
            },
            CampaignCommand::BeginImport { import_id, source } => match status {
                Some(S::Accepted | S::Processing | S::Scheduled) => {
                    Ok(vec![CampaignEvent::ImportStarted { import_id, source }])
                }
                _ => Err(self.illegal("recipients can be added only before the campaign starts")),
            },
            CampaignCommand::AddBatch {
                import_id,
                messages,
            } => {
                if !self.open_imports.contains(&import_id) {
                    return Err(self.illegal("the import is not open"));
                }
                if messages == 0 {
                    return Err(DomainError::InvalidCommand("a batch holds messages"));
                }
                Ok(vec![CampaignEvent::BatchCreated {
                    import_id,
                    batch: self.batches,
                    messages,
                }])
            }
            CampaignCommand::FinishImport {
                import_id,
                accepted,
                rejected,
                error,
            } => {
                if !self.open_imports.contains(&import_id) {
                    return Err(self.illegal("the import is not open"));
                }
                Ok(vec![CampaignEvent::ImportFinished {
                    import_id,
                    accepted,
                    rejected,
                    error,
                }])
            }
            CampaignCommand::Start => {
                if status != Some(S::Scheduled) {
                    return Err(self.illegal("only a scheduled campaign starts"));
                }
                let due = self
                    .spec()
                    .and_then(|spec| spec.schedule_at)
                    .is_none_or(|at| at <= now);
                if !due {
                    return Err(DomainError::InvalidCommand(
                        "the campaign is scheduled for later",
                    ));
                }
                Ok(vec![CampaignEvent::Started { at: now }])
            }
            CampaignCommand::ReleaseBatch { batch } => {
                if status != Some(S::Sending) {
                    return Err(self.illegal("batches are released only while sending"));
                }
                if batch != self.released || batch >= self.batches {
                    return Err(DomainError::InvalidCommand(
                        "batches are released in order, each once",
                    ));
                }
                let mut events = vec![CampaignEvent::BatchReleased { batch }];
                if batch + 1 == self.batches {
                    events.push(CampaignEvent::AllReleased);
                }
                Ok(events)
            }
            CampaignCommand::ReachProgress { summary } => {
                if !matches!(status, Some(S::Sending | S::Sent | S::Paused)) {
                    return Err(self.illegal("progress is reported only while sending"));
                }
                // Every step crossed since the last report, lowest first: a
                // pause can carry the count past several steps at once.
                let percent = summary.percent_done();
                let mut steps: Vec<u8> = self
                    .spec()
                    .map(|spec| {
                        spec.progress_steps
                            .iter()
                            .copied()
                            .filter(|step| *step > self.progress_reached && *step <= percent)
                            .collect()
                    })
                    .unwrap_or_default();
                steps.sort_unstable();
                steps.dedup();
                Ok(steps
                    .into_iter()
                    .map(|step| CampaignEvent::ProgressReached {
                        step,
                        summary: summary.clone(),
                    })
                    .collect())
            }
            CampaignCommand::Complete { summary } => {
                if status != Some(S::Sent) {
                    return Err(self.illegal("only a campaign with every batch released completes"));
                }
                if summary.pending > 0 {
                    return Err(DomainError::InvalidCommand(
                        "messages of the campaign are still pending",
                    ));
                }
                Ok(vec![CampaignEvent::Completed { summary }])
            }
            CampaignCommand::Pause => match status {
                Some(S::Paused) => Ok(Vec::new()),
                // Sent: every batch is released, but messages may still
                // wait in the delivery queue.
                Some(S::Scheduled | S::Sending | S::Sent) => Ok(vec![CampaignEvent::Paused]),
                _ => Err(self.illegal("only a scheduled, sending or sent campaign pauses")),
            },
            CampaignCommand::Resume => match status {
                Some(S::Paused) => Ok(vec![CampaignEvent::Resumed]),
                Some(S::Scheduled | S::Sending | S::Sent) => Ok(Vec::new()),
                _ => Err(self.illegal("only a paused campaign resumes")),
            },
            CampaignCommand::Cancel { reason } => match status {
                Some(S::Cancelled) => Ok(Vec::new()),
                Some(S::Completed) => Err(DomainError::InvalidCommand(
                    "a completed campaign cannot be cancelled",
                )),
                Some(_) => Ok(vec![CampaignEvent::Cancelled {
                    reason: reason.map(clip),
                }]),
                None => Err(self.illegal("")),
            },
        }
    }
}

/// One recipient as given: its address and its template variables.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignRecipient {
    pub address: String,
    pub variables: Map<String, Value>,
}

/// Reads CSV rows into recipients: the header names the columns, the
/// address column gives the address, every other column becomes a template
/// variable typed by the template's schema.
#[derive(Debug, Clone)]
pub struct RowParser {
    headers: Vec<String>,
    address_index: usize,
    channel: Channel,
    schema: BTreeMap<String, VariableSpec>,
}

impl RowParser {
    /// Checks the header row: it must name the address column, no column
    /// twice, and at most [`MAX_COLUMNS`].
    pub fn new(
        headers: Vec<String>,
        address_column: &str,
        channel: Channel,
        schema: BTreeMap<String, VariableSpec>,
    ) -> Result<RowParser, String> {
        let headers: Vec<String> = headers.into_iter().map(|h| h.trim().to_string()).collect();
        if headers.len() > MAX_COLUMNS {
            return Err(format!("the header has more than {MAX_COLUMNS} columns"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for header in &headers {
            if header.is_empty() {
                return Err("the header has an empty column name".into());
            }
            if !seen.insert(header.as_str()) {
                return Err(format!("the header names column {header:?} twice"));
            }
        }
        let address_index = headers
            .iter()
            .position(|h| h == address_column)
            .ok_or_else(|| format!("the header has no address column {address_column:?}"))?;
        Ok(RowParser {
            headers,
            address_index,
            channel,
            schema,
        })
    }

    /// The recipient of one row, or every reason it is refused.
    pub fn parse<'a>(
        &self,
        fields: impl ExactSizeIterator<Item = &'a str>,
    ) -> Result<CampaignRecipient, String> {
        if fields.len() != self.headers.len() {
            return Err(format!(
                "missing column: expected {} fields, found {}",
                self.headers.len(),
                fields.len()
            ));
        }
        let mut address = None;
        let mut variables = Map::new();
        let mut reasons = Vec::new();
        for (index, (header, raw)) in self.headers.iter().zip(fields).enumerate() {
            if index == self.address_index {
                address = Some(raw.trim().to_string());
                continue;
            }
            let kind = self.schema.get(header).map(|spec| spec.kind);
            match typed(raw, kind) {
                Ok(value) => {
                    variables.insert(header.clone(), value);
                }
                Err(reason) => reasons.push(format!("{header}: {reason}")),
            }
        }
        let address = address.unwrap_or_default();
        if let Err(reason) = self.check_address(&address) {
            reasons.insert(0, reason);
        }
        if reasons.is_empty()
            && let Err(errors) = check_variables(&self.schema, &variables)
        {
            for error in errors.errors() {
                let name = error
                    .path
                    .strip_prefix("template.variables.")
                    .unwrap_or(&error.path);
                reasons.push(format!("{name}: {}", error.message));
            }
        }
        if reasons.is_empty() {
            Ok(CampaignRecipient { address, variables })
        } else {
            Err(reasons.join("; "))
        }
    }

    fn check_address(&self, address: &str) -> Result<(), String> {
        let column = &self.headers[self.address_index];
        if address.is_empty() {
            return Err(format!("missing column: {column} is empty"));
        }
        let parsed = match self.channel {
            Channel::Sms => PhoneNumber::parse(address).map(|_| ()),
            _ => EmailAddress::parse(address).map(|_| ()),
        };
        parsed.map_err(|error| format!("invalid address in {column}: {error}"))
    }
}

/// Checks a listed recipient (`addCampaignRecipients`) like a CSV row.
pub fn check_listed(
    recipient: &CampaignRecipient,
    channel: Channel,
    schema: &BTreeMap<String, VariableSpec>,
) -> Result<(), String> {
    let parser = RowParser {
        headers: vec!["address".into()],
        address_index: 0,
        channel,
        schema: schema.clone(),
    };
    parser.check_address(recipient.address.trim())?;
    check_variables(schema, &recipient.variables).map_err(|errors| {
        errors
            .errors()
            .iter()
            .map(|e| format!("{}: {}", e.path, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// A CSV cell as the variable type the template declares: text for strings
/// and undeclared columns, numbers, `true`/`false`, JSON for objects and
/// arrays. An empty cell is null (absent).
fn typed(raw: &str, kind: Option<VariableType>) -> Result<Value, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Ok(Value::Null);
    }
    match kind {
        None | Some(VariableType::String) | Some(VariableType::Any) => {
            Ok(Value::String(raw.to_string()))
        }
        Some(VariableType::Number) => trimmed
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .and_then(|n| {
                // Whole numbers stay integers, so `{{ n }}` renders "3", not "3.0".
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Some(Value::from(n as i64))
                } else {
                    serde_json::Number::from_f64(n).map(Value::Number)
                }
            })
            .ok_or_else(|| format!("type mismatch: {trimmed:?} is not a number")),
        Some(VariableType::Boolean) => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!("type mismatch: {trimmed:?} is not true or false")),
        },
        Some(kind @ (VariableType::Object | VariableType::Array)) => {
            match serde_json::from_str::<Value>(trimmed) {
                Ok(value @ Value::Object(_)) if kind == VariableType::Object => Ok(value),
                Ok(value @ Value::Array(_)) if kind == VariableType::Array => Ok(value),
                _ => Err(format!("type mismatch: not a JSON {}", kind.as_str())),
            }
        }
    }
}

#[cfg(test)]
mod tests;
