//! The composition root: one place that wires the vendors into the configuration
//! ([`load_settings`]) and store, auth, executor and runner together for every command that runs
//! jobs (`run`, `run --once`, `demo`). Commands take the parts they need from [`Engine`] instead
//! of building their own.

use std::sync::Arc;

use anyhow::Result;

use crate::auth;
use crate::config::{ConfigError, ConfigSource, Settings};
use crate::executor::{Executor, ExecutorOptions};
use crate::jobs::runner::{Progress, Runner};
use crate::store::Store;
use crate::vendors;

/// Reads, parses and validates the configuration with every registered vendor's section.
pub fn load_settings(source: &ConfigSource) -> Result<Settings, ConfigError> {
    Settings::load(source, vendors::REGISTRY)
}

/// Parses and validates configuration text as the whole file, without the environment (tools,
/// fuzz targets), with every registered vendor's section.
pub fn settings_from_toml(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml_str(text, vendors::REGISTRY)
}

/// The running parts of the service, built once per process.
pub struct Engine {
    pub store: Store,
    pub runner: Arc<Runner>,
}

impl Engine {
    /// Opens the store (embedded server when needed), builds auth, the executor and the runner.
    pub async fn start(settings: Arc<Settings>, command: &str) -> Result<Engine> {
        Engine::start_with(settings, command, None).await
    }

    /// Like [`Engine::start`], sending the runner's progress events to `progress`.
    pub async fn start_with(
        settings: Arc<Settings>,
        command: &str,
        progress: Option<tokio::sync::mpsc::UnboundedSender<Progress>>,
    ) -> Result<Engine> {
        let store = Store::open(&settings.database, command).await?;
        let registry = auth::build(&settings, store.pool().clone());
        // Every process on this database spends one rate budget per source.
        let executor = Arc::new(Executor::with_shared_budget(
            settings.clone(),
            registry,
            ExecutorOptions::default(),
            store.pool().clone(),
            store.instance().id(),
        )?);
        let mut runner = Runner::new(
            settings,
            store.pool().clone(),
            store.instance().id(),
            executor,
            store.job_locks(),
        );
        if let Some(progress) = progress {
            runner = runner.with_progress(progress);
        }
        Ok(Engine {
            store,
            runner: Arc::new(runner),
        })
    }
}
