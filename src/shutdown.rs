//! The one shutdown of `run` and `run --once`: the first SIGINT or SIGTERM stops new windows,
//! running ones get `server.shutdown_grace_secs` to commit, then they are dropped (their
//! transactions roll back) and recorded `interrupted` ([`record_stop`]); a second signal exits
//! at once, and the next start marks what it left `running` as interrupted.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::app::Engine;

/// The stop of one process: set off by a signal, read by the work it stops.
pub(crate) struct Shutdown {
    /// Cancelled at the first signal: start no new window.
    pub stopping: CancellationToken,
    /// Cancelled when the grace period after it is over: drop the windows still running.
    pub abort: CancellationToken,
    signalled: Arc<OnceLock<StopSignal>>,
}

impl Shutdown {
    /// Watches SIGINT and SIGTERM from now on, with `grace` between stopping and aborting.
    pub(crate) fn watch(grace: Duration) -> Shutdown {
        let shutdown = Shutdown {
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            signalled: Arc::new(OnceLock::new()),
        };
        tokio::spawn(watch_signals(
            grace,
            shutdown.stopping.clone(),
            shutdown.abort.clone(),
            shutdown.signalled.clone(),
        ));
        shutdown
    }

    /// The signal that stopped the process, if one did.
    pub(crate) fn signalled(&self) -> Option<StopSignal> {
        self.signalled.get().copied()
    }
}

/// Records a stop: failures the database missed first (so they are not overwritten as
/// `interrupted`), then this process's unfinished runs as `interrupted`. An unreachable database
/// must not turn a clean stop into an error exit: it is logged, and the next start records them.
pub(crate) async fn record_stop(engine: &Engine) {
    engine.runner.record_unrecorded().await;
    let (pool, instance) = (engine.store.pool(), engine.store.instance().id());
    match crate::store::runs::interrupt_running(pool, instance).await {
        Ok(0) => {}
        Ok(runs) => tracing::warn!(
            runs,
            "Rolled back the unfinished windows and recorded them as interrupted."
        ),
        Err(error) => tracing::warn!(error = %format!("{error:#}"),
            "Could not record the unfinished windows; the next start marks them interrupted."),
    }
}

/// A signal that stops `run` or `run --once`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    pub(crate) fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention: 128 + the signal's number.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }
}

/// The second signal: no summary, no records; the next start marks this process's runs
/// `interrupted` (their transactions roll back when the connections close).
fn exit_now(signal: StopSignal) -> ! {
    eprintln!(
        "\n{} again: stopping at once. Unfinished windows roll back; the next start records them as interrupted.",
        signal.name()
    );
    std::process::exit(signal.exit_code().into())
}

/// SIGINT and SIGTERM listeners.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }
}

/// First signal: record it, stop starting windows, and after `grace` abort the running ones.
/// A second signal exits the process at once.
async fn watch_signals(
    grace: Duration,
    stopping: CancellationToken,
    abort: CancellationToken,
    signalled: Arc<OnceLock<StopSignal>>,
) {
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!(error = %error, "Cannot catch SIGINT/SIGTERM; an interrupt stops this process at once.");
            return;
        }
    };
    let first = signals.next().await;
    let _ = signalled.set(first);
    tracing::warn!(
        signal = first.name(),
        grace_secs = grace.as_secs(),
        "Stopping: starting no new windows; running ones may commit within the grace period. Interrupt again to stop at once."
    );
    stopping.cancel();
    tokio::select! {
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_secs = grace.as_secs(), "Grace period over: rolling back the windows still running.");
            abort.cancel();
        }
        second = signals.next() => exit_now(second),
    }
    exit_now(signals.next().await);
}
