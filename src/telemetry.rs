//! Logging: `tracing` with a human format on a terminal and JSON lines when asked, filtered by
//! `RUST_LOG`, else `log.level` from the config, else `info`.
//!
//! Without `RUST_LOG`, the database driver and the scheduler library log only warnings: sqlx
//! turns every PostgreSQL NOTICE into an info event (`relation "_sqlx_migrations" already
//! exists, skipping` on every start) and tokio-cron-scheduler announces each timer it creates.
//! Our own events are one line per window and per notable event. `RUST_LOG` (e.g.
//! `RUST_LOG=info,sqlx=debug`) replaces the whole filter when that chatter is wanted.
//!
//! Who an event concerns comes from the spans it happens in: `run` (job, dataset, trigger),
//! `window` (scope, window, run_id) and `upstream` (source, attempt), not from fields repeated
//! on every event. The human format prints them as the usual `run{job=…}:window{…}:` prefix;
//! the JSON format ([`FlatJson`]) puts them next to the event's own fields in one flat object, so
//! a collector can filter on `job` or `run_id` whichever span set it.

use std::io::IsTerminal;

use tracing::{Event, Subscriber};
use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::filter::{IndicatifFilter, hide_indicatif_span_fields};
use tracing_subscriber::field::VisitOutput as _;
use tracing_subscriber::fmt::format::{DefaultFields, JsonFields, JsonVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Installs the global subscriber. Logs go to stderr so command output on stdout stays clean.
///
/// With the human format on a terminal, progress bars (spans marked `indicatif.pb_show`, see
/// `run --once`) are drawn at the bottom of stderr and every log line is printed above them,
/// never into them. Elsewhere (a pipe, a file, JSON logs) there are no bars.
pub(crate) fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(configured_filter(level.unwrap_or("info"))))
        .unwrap_or_else(|_| EnvFilter::new(configured_filter("info")));
    let terminal = std::io::stderr().is_terminal();
    let progress = (format == LogFormat::Human && terminal).then(|| {
        IndicatifLayer::new().with_span_field_formatter(hide_indicatif_span_fields(DefaultFields::new()))
    });
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match (format, &progress) {
        (LogFormat::Json, _) => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        (LogFormat::Human, Some(progress)) => tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_target(false)
            .with_writer(progress.get_stderr_writer())
            .with_filter(filter)
            .boxed(),
        (LogFormat::Human, None) => tracing_subscriber::fmt::layer()
            .with_ansi(terminal)
            .with_target(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // Only spans that ask for a bar get one; the log filter does not hide bars.
    let bars = progress.map(|progress| progress.with_filter(IndicatifFilter::new(false)));
    let installed = tracing_subscriber::registry().with(logs).with(bars).try_init();
    // A second init (tests) keeps the first subscriber; that is fine.
    drop(installed);
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC), `level`, `target`, the fields of
/// every span the event is in (outermost first, so an inner span's field wins a clash), then the
/// event's own fields (`message` among them), which win over any span's.
struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        let mut object = Map::new();
        let metadata = event.metadata();
        object.insert(
            "timestamp".into(),
            Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
        object.insert("level".into(), Value::from(metadata.level().as_str()));
        object.insert("target".into(), Value::from(metadata.target()));
        let mut add = |json: &str| {
            if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(json) {
                object.extend(fields);
            }
        };
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                // The fmt layer stores each span's fields formatted by `N`, here `JsonFields`: a
                // JSON object (re-serialised whole when a field is recorded later).
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    add(fields.as_str());
                }
            }
        }
        let mut own = String::new();
        let mut visitor = JsonVisitor::new(&mut own);
        event.record(&mut visitor);
        visitor.finish()?;
        add(&own);
        writeln!(writer, "{}", Value::Object(object))
    }
}

/// Libraries whose info events are chatter to an operator (see the module docs).
const QUIET_LIBRARIES: &[&str] = &["sqlx", "tokio_cron_scheduler"];

/// The filter for `log.level`: that level for us, warnings only from [`QUIET_LIBRARIES`]. A
/// level naming targets itself (`info,sqlx=debug`) keeps what it says about them.
fn configured_filter(level: &str) -> String {
    let mut filter = level.to_owned();
    for library in QUIET_LIBRARIES {
        if !level.contains(library) {
            filter.push_str(&format!(",{library}=warn"));
        }
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::configured_filter;

    #[test]
    fn libraries_log_warnings_only_unless_the_level_names_them() {
        assert_eq!(
            configured_filter("info"),
            "info,sqlx=warn,tokio_cron_scheduler=warn"
        );
        assert_eq!(
            configured_filter("debug,sqlx=debug"),
            "debug,sqlx=debug,tokio_cron_scheduler=warn"
        );
    }
}
