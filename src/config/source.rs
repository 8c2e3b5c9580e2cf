//! Source settings: one configured upstream account.
//!
//! What a source's section holds is its vendor's business: each vendor folder
//! (`src/vendors/<vendor>/settings.rs`) declares its section and implements [`Section`] (defaults,
//! endpoints, validation). This module knows only what every section shares, and picks the
//! vendor's reader by the `kind` key among the [`SectionKind`]s the caller registers, and reads a
//! job's `dataset` from the registered [`Catalog`] ([`Registry`]: `vendors::REGISTRY`, passed in
//! by the composition root: the configuration sits below the vendors and never names one).

use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::validate::SectionCheck;
use super::values::HttpUrl;
use crate::catalog::{Catalog, Dataset, SourceKind};

/// What every vendor's configuration section answers. Implemented once per vendor folder.
pub trait Section: fmt::Debug + Send + Sync + SectionAny {
    fn kind(&self) -> SourceKind;
    /// `sources.NAME.rate_limit`, when set.
    fn rate_limit(&self) -> Option<RateLimit>;
    /// The proactive limit used when the source sets none: the vendor's documented budget, or a
    /// polite guess where none is documented (`docs/vendors/README.md`, "At a glance").
    fn default_rate_limit(&self) -> RateLimit;
    /// Whether plain `http://` endpoints are allowed (the sandbox).
    fn allow_http(&self) -> bool;
    /// `sources.NAME.archive`: how long the source's answers are archived.
    fn archive(&self) -> ArchiveSettings;
    /// Every endpoint with its key name, for validation and for `check`.
    fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)>;
    /// The authentication flow, in words, for `check` and `auth status`.
    fn flow(&self) -> &'static str;
    /// How long discovered scopes may be reused; `None` for vendors whose scopes come from the
    /// configuration and cost no call.
    fn discovery_ttl(&self) -> Option<Duration> {
        None
    }
    /// The vendor's own checks (required keys, secrets, cross-field rules), reported through
    /// `check` with keys relative to the section.
    fn validate(&mut self, check: &mut SectionCheck<'_>);
    /// What the vendor hands the layers above the configuration, built from this section: auth's
    /// `auth::AuthSetup` (its token dialect) and the executor's `executor::CallSetup` (its
    /// endpoints and answer dialect).
    fn parts(&self, parts: &mut Parts);
}

/// What a vendor's section hands to the layers above the configuration, each under its own type
/// (the way `http::Extensions` carries values for layers that know their types): the
/// configuration stays below them and names none.
#[derive(Default)]
pub struct Parts(Vec<Box<dyn Any + Send>>);

impl Parts {
    /// Hands over `part`, found by its type.
    pub fn put<T: Any + Send>(&mut self, part: T) {
        self.0.push(Box::new(part));
    }

    fn take<T: Any>(self) -> Option<T> {
        self.0
            .into_iter()
            .find_map(|part| (part as Box<dyn Any>).downcast().ok())
            .map(|part| *part)
    }
}

/// The `Any` plumbing of a [`Section`], implemented for every cloneable section.
pub trait SectionAny: Any {
    fn clone_section(&self) -> Box<dyn Section>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Section + Clone> SectionAny for T {
    fn clone_section(&self) -> Box<dyn Section> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// How one vendor's section is read: registered once per vendor (`vendors::SECTIONS`).
pub struct SectionKind {
    pub kind: SourceKind,
    /// Reads the section (without its `kind` key); a message may start with
    /// [`NESTED_PATH_MARK`] and the path inside the section.
    pub parse: fn(config::Value) -> Result<Box<dyn Section>, String>,
}

/// Every registered vendor's section reader.
pub type Sections = &'static [SectionKind];

/// What the configuration is handed of the registered vendors: how to read each one's section
/// (`sources.NAME.kind`) and their datasets (`jobs.NAME.dataset`).
#[derive(Clone, Copy)]
pub struct Registry {
    pub sections: Sections,
    pub catalog: Catalog,
}

impl Registry {
    /// No vendor: what a deserialisation outside [`super::Settings::load`] sees.
    const NONE: Registry = Registry {
        sections: &[],
        catalog: Catalog::new(&[]),
    };
}

/// Reads a section of type `T` (for [`SectionKind::parse`]).
pub fn parse_section<T: Section + DeserializeOwned>(
    value: config::Value,
) -> Result<Box<dyn Section>, String> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(|section| Box::new(section) as Box<dyn Section>)
        .map_err(|e| {
            let path = e.path().to_string();
            let message = super::clean_serde_message(&e.inner().to_string());
            if path == "." || path.is_empty() {
                message
            } else {
                format!("{NESTED_PATH_MARK}{path}: {message}")
            }
        })
}

/// One upstream account: its vendor's section.
pub struct SourceSettings(Box<dyn Section>);

impl Clone for SourceSettings {
    fn clone(&self) -> Self {
        SourceSettings(self.0.clone_section())
    }
}

impl fmt::Debug for SourceSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Marks an error message whose text starts with the path inside a source (`@graphql_url: …`),
/// so the loader can report the full key. serde's internally tagged enums lose that path.
pub(super) const NESTED_PATH_MARK: char = '@';

thread_local! {
    /// The registry of the [`super::Settings::load`] running on this thread: serde's
    /// `Deserialize` takes no argument, and the configuration may not name the vendors.
    static REGISTRY: Cell<Registry> = const { Cell::new(Registry::NONE) };
}

/// Runs `f` with `registry` as the one [`SourceSettings`] and a job's dataset deserialise with.
pub(super) fn with_registry<T>(registry: Registry, f: impl FnOnce() -> T) -> T {
    let previous = REGISTRY.with(|r| r.replace(registry));
    let out = f();
    REGISTRY.with(|r| r.set(previous));
    out
}

/// Reads a job's `dataset`: a name in the registered catalogue.
pub(super) fn dataset<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Dataset, D::Error> {
    let name = String::deserialize(deserializer)?;
    let catalog = REGISTRY.with(Cell::get).catalog;
    catalog.dataset(&name).ok_or_else(|| {
        serde::de::Error::custom(format!("`{name}` is not a dataset (one of: {})", catalog.names()))
    })
}

impl<'de> Deserialize<'de> for SourceSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let sections = REGISTRY.with(Cell::get).sections;
        let kinds = || {
            sections
                .iter()
                .map(|s| s.kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let value = config::Value::deserialize(deserializer)?;
        let table = value.clone().into_table().map_err(D::Error::custom)?;
        let kind = table
            .get("kind")
            .ok_or_else(|| D::Error::custom(format!("missing field `kind` ({})", kinds())))?
            .clone()
            .into_string()
            .map_err(D::Error::custom)?;
        // `kind` is consumed here; the sections deny unknown fields, so drop it first.
        let mut rest = table;
        rest.remove("kind");
        let rest = config::Value::new(None, config::ValueKind::Table(rest));
        match sections.iter().find(|s| s.kind.as_str() == kind) {
            Some(section) => (section.parse)(rest)
                .map(SourceSettings)
                .map_err(D::Error::custom),
            None => Err(D::Error::custom(format!(
                "kind `{kind}` is not one of {}",
                kinds()
            ))),
        }
    }
}

/// `sources.NAME.archive`: the raw archive of the source's answers (`crate::archive`), the same
/// key for every vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveSettings {
    /// Days an archived answer is kept, counted from its window's commit (the service deletes
    /// older ones). 0 archives nothing and keeps nothing.
    #[serde(default = "ArchiveSettings::default_keep_days")]
    pub keep_days: u32,
}

impl ArchiveSettings {
    /// Longer than any vendor keeps its history (Retarus 90 days), so the archive outlives it.
    pub const DEFAULT_KEEP_DAYS: u32 = 400;

    fn default_keep_days() -> u32 {
        Self::DEFAULT_KEEP_DAYS
    }

    /// Whether loads of the source archive their answers.
    pub fn keeps_answers(&self) -> bool {
        self.keep_days > 0
    }
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        ArchiveSettings {
            keep_days: Self::DEFAULT_KEEP_DAYS,
        }
    }
}

/// Calls allowed per period, enforced for all jobs of a source together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Calls allowed in one period.
    pub calls: u32,
    /// Length of the period in milliseconds.
    pub per_ms: u64,
}

impl RateLimit {
    pub const fn new(calls: u32, per: Duration) -> Self {
        RateLimit {
            calls,
            per_ms: per.as_millis() as u64,
        }
    }

    pub(crate) fn period(&self) -> Duration {
        Duration::from_millis(self.per_ms)
    }
}

/// Where a vendor sends the browser back after consent when the source names no
/// `redirect_uri` (`auth login` listens there).
pub fn default_redirect_uri() -> HttpUrl {
    HttpUrl::parse("http://127.0.0.1:8788/callback").expect("static URL")
}

impl SourceSettings {
    /// A source of `section` (for tools and tests that build settings without a file).
    pub fn new(section: impl Section + Clone) -> Self {
        SourceSettings(Box::new(section))
    }

    pub(crate) fn kind(&self) -> SourceKind {
        self.0.kind()
    }

    /// The vendor's section, when it is a `T`.
    pub fn section<T: Section>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The vendor's section to change, when it is a `T`.
    pub fn section_mut<T: Section>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut()
    }

    /// The part of type `T` the vendor hands over (see [`Section::parts`]); `None` when it hands
    /// none (a test in `src/vendors/` checks that every vendor hands every part).
    pub fn part<T: Any>(&self) -> Option<T> {
        let mut parts = Parts::default();
        self.0.parts(&mut parts);
        parts.take()
    }

    pub(super) fn validate(&mut self, check: &mut SectionCheck<'_>) {
        self.0.validate(check)
    }

    pub(crate) fn rate_limit(&self) -> RateLimit {
        self.0.rate_limit().unwrap_or_else(|| self.0.default_rate_limit())
    }

    /// How long this source's discovered scopes may be reused (`sources.NAME.discovery_ttl_secs`);
    /// `None` for kinds whose scopes come from the configuration and cost no call.
    pub(crate) fn discovery_ttl(&self) -> Option<Duration> {
        self.0.discovery_ttl()
    }

    pub(crate) fn allow_http(&self) -> bool {
        self.0.allow_http()
    }

    /// `sources.NAME.archive`.
    pub fn archive(&self) -> ArchiveSettings {
        self.0.archive()
    }

    /// Every endpoint with its key name, for validation and for `check`.
    pub(crate) fn endpoints(&self) -> Vec<(&'static str, &HttpUrl)> {
        self.0.endpoints()
    }

    /// The authentication flow, in words, for `check` and `auth status`.
    pub(crate) fn flow(&self) -> &'static str {
        self.0.flow()
    }
}
