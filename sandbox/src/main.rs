//! The `sandbox` binary: runs all four vendor stand-ins on loopback ports until Ctrl-C, or prints
//! a vendor's GraphQL SDL (`sandbox sdl retarus|roubler|altrata`), which is how
//! `schemas/<vendor>.graphql` is generated.
//!
//! The first line printed by a run is one JSON object (`{"retarus": .., "roubler": .., ..}`) so a
//! script can start the sandbox and read its URLs and credentials; a human summary follows.
//! `--only retarus` starts just that vendor (the load benchmark needs millions of Retarus records
//! without the other vendors generating theirs at start-up), and `--anchor` pins the data set's
//! "now" so a caller knows which windows hold data. `--remove-field retarus:FaxInUdr.faxId` starts a
//! vendor whose schema lost that field, `--retype-field roubler:LocationSalesDay.day:String` one
//! whose field changed type (schema-drift checks).

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use sandbox::ratelimit::RateLimitMode;
use sandbox::{Sandbox, SandboxOptions};

#[derive(Parser, Debug)]
#[command(
    name = "sandbox",
    about = "Deterministic loopback stand-ins for the four vendor APIs."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Seed of every generated record.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Days of generated history, ending today.
    #[arg(long, default_value_t = 100)]
    history_days: u32,
    /// Records per day per report / dataset.
    #[arg(long, default_value_t = 5)]
    records_per_day: u32,
    /// Roubler rate limiting: `monitoring` (count only) or `enforcing` (answer 429).
    #[arg(long, value_enum)]
    roubler_mode: Option<RoublerMode>,
    /// Roubler: calls allowed per window.
    #[arg(long)]
    roubler_limit: Option<u32>,
    /// Roubler: rate-limit window in seconds.
    #[arg(long)]
    roubler_window_secs: Option<u64>,
    /// Roubler: how the rate-limit window runs: `first-call` (fixed, opening with the first call
    /// after the last reset; default), `clock` (fixed to the clock) or `sliding` (a sliding log).
    #[arg(long, value_parser = parse_knob::<sandbox::ratelimit::WindowKind>)]
    roubler_window_kind: Option<sandbox::ratelimit::WindowKind>,
    /// Roubler: how the reset is written: `seconds` (delay, rounded up; default), `epoch` (epoch
    /// seconds, rounded up) or `http-date`.
    #[arg(long, value_parser = parse_knob::<sandbox::ratelimit::ResetFormat>)]
    roubler_reset_format: Option<sandbox::ratelimit::ResetFormat>,
    /// Roubler: which headers carry the limit: `x-ratelimit` (default), `ietf` (`RateLimit-Limit`,
    /// `-Remaining`, `-Reset` and `RateLimit-Policy`) or `ietf-structured` (`RateLimit` and
    /// `RateLimit-Policy`).
    #[arg(long, value_parser = parse_knob::<sandbox::ratelimit::HeaderFamily>)]
    roubler_rate_headers: Option<sandbox::ratelimit::HeaderFamily>,
    /// Retarus access-token lifetime in seconds (`expires_in`).
    #[arg(long, default_value_t = 300)]
    retarus_token_secs: u64,
    /// Altrata daily call quota per credential (default: unlimited).
    #[arg(long)]
    altrata_daily_quota: Option<u64>,
    /// The data set's "now" (RFC 3339, e.g. 2026-03-10T09:00:00Z); default: the clock, truncated
    /// to the hour.
    #[arg(long, value_parser = parse_anchor)]
    anchor: Option<chrono::DateTime<chrono::Utc>>,
    /// Retarus: answer a repeated GraphQL request with the bytes of its first answer (load
    /// benchmarks: a second pass then measures the client, not the generator).
    #[arg(long)]
    retarus_cache_responses: bool,
    /// Start only these vendors (comma-separated); the JSON line then names only them.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Vendor>,
    /// Remove a field from a GraphQL vendor's schema, as a vendor's release might:
    /// `VENDOR:Type.field` (e.g. `retarus:FaxInUdr.faxId`); repeat for several. Introspection
    /// leaves it out and queries selecting it are refused.
    #[arg(long, value_name = "VENDOR:TYPE.FIELD", value_parser = parse_removal)]
    remove_field: Vec<(SdlVendor, sandbox::drift::RemovedField)>,
    /// Change a scalar field's type in a GraphQL vendor's schema, values included:
    /// `VENDOR:Type.field:Scalar` with String, ID, Int or Float (e.g.
    /// `roubler:LocationSalesDay.day:String`); repeat for several.
    #[arg(long, value_name = "VENDOR:TYPE.FIELD:SCALAR", value_parser = parse_retyping)]
    retype_field: Vec<(SdlVendor, sandbox::drift::RetypedField)>,
}

fn parse_removal(text: &str) -> Result<(SdlVendor, sandbox::drift::RemovedField), String> {
    let (vendor, field) = vendor_and(text, "Type.field", "retarus:FaxInUdr.faxId")?;
    Ok((vendor, field.parse()?))
}

fn parse_retyping(text: &str) -> Result<(SdlVendor, sandbox::drift::RetypedField), String> {
    let (vendor, retyping) = vendor_and(text, "Type.field:Scalar", "roubler:LocationSalesDay.day:String")?;
    Ok((vendor, retyping.parse()?))
}

/// `VENDOR:rest`, the vendor a GraphQL one.
fn vendor_and<'t>(text: &'t str, rest: &str, example: &str) -> Result<(SdlVendor, &'t str), String> {
    let (vendor, field) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not `VENDOR:{rest}` (e.g. `{example}`)"))?;
    let vendor = SdlVendor::from_str(vendor, true)
        .map_err(|_| format!("`{vendor}` is not a GraphQL vendor (retarus, roubler or altrata)"))?;
    Ok((vendor, field))
}

fn parse_knob<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, String> {
    text.parse()
}

fn parse_anchor(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|e| format!("not an RFC 3339 instant: {e}"))
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Vendor {
    Retarus,
    Roubler,
    Altrata,
    Retently,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the GraphQL SDL the sandbox serves for one vendor.
    Sdl {
        #[arg(value_enum)]
        vendor: SdlVendor,
    },
}

/// The GraphQL vendors (`sdl`, `--remove-field`, `--retype-field`).
#[derive(ValueEnum, Clone, Copy, Debug)]
enum SdlVendor {
    Retarus,
    Roubler,
    Altrata,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum RoublerMode {
    Monitoring,
    Enforcing,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Sdl { vendor }) = cli.command {
        let sdl = match vendor {
            SdlVendor::Retarus => sandbox::retarus::sdl(),
            SdlVendor::Altrata => sandbox::altrata::sdl(),
            SdlVendor::Roubler => sandbox::roubler::sdl(),
        };
        print!("{sdl}");
        return Ok(());
    }

    let mut options = SandboxOptions {
        seed: cli.seed,
        history_days: cli.history_days,
        records_per_day: cli.records_per_day,
        ..SandboxOptions::default()
    };
    if let Some(anchor) = cli.anchor {
        options.anchor = anchor;
    }
    options.retarus.token_lifetime = Duration::from_secs(cli.retarus_token_secs);
    options.retarus.cache_responses = cli.retarus_cache_responses;
    options.altrata.daily_quota = cli.altrata_daily_quota;
    if let Some(mode) = cli.roubler_mode {
        options.roubler.rate_mode = match mode {
            RoublerMode::Monitoring => RateLimitMode::Monitoring,
            RoublerMode::Enforcing => RateLimitMode::Enforcing,
        };
    }
    if let Some(limit) = cli.roubler_limit {
        options.roubler.rate_limit = limit;
    }
    if let Some(secs) = cli.roubler_window_secs {
        options.roubler.rate_window = Duration::from_secs(secs);
    }
    if let Some(kind) = cli.roubler_window_kind {
        options.roubler.rate_window_kind = kind;
    }
    if let Some(format) = cli.roubler_reset_format {
        options.roubler.rate_reset_format = format;
    }
    if let Some(family) = cli.roubler_rate_headers {
        options.roubler.rate_header_family = family;
    }
    for (vendor, field) in cli.remove_field {
        match vendor {
            SdlVendor::Retarus => options.retarus.removed_fields.push(field),
            SdlVendor::Roubler => options.roubler.removed_fields.push(field),
            SdlVendor::Altrata => options.altrata.removed_fields.push(field),
        }
    }
    for (vendor, retyping) in cli.retype_field {
        match vendor {
            SdlVendor::Retarus => options.retarus.retyped_fields.push(retyping),
            SdlVendor::Roubler => options.roubler.retyped_fields.push(retyping),
            SdlVendor::Altrata => options.altrata.retyped_fields.push(retyping),
        }
    }

    if !cli.only.is_empty() {
        return run_only(&options, &cli.only).await;
    }
    let sandbox = Sandbox::start(options).await?;
    let summary = serde_json::json!({
        "retarus": sandbox.retarus.describe(),
        "roubler": sandbox.roubler.describe(),
        "altrata": sandbox.altrata.describe(),
        "retently": sandbox.retently.describe(),
    });
    println!("{summary}");
    print_human_summary(&sandbox);
    tokio::signal::ctrl_c().await?;
    eprintln!("sandbox: stopping");
    Ok(())
}

/// Starts only the named vendors and prints their JSON line (no human summary: it is for scripts).
async fn run_only(options: &SandboxOptions, vendors: &[Vendor]) -> std::io::Result<()> {
    let mut summary = serde_json::Map::new();
    let mut guards = Vec::new();
    for vendor in vendors {
        let (name, describe, guard) = match vendor {
            Vendor::Retarus => {
                let (h, g) = sandbox::retarus::start(options).await?;
                ("retarus", h.describe(), g)
            }
            Vendor::Roubler => {
                let (h, g) = sandbox::roubler::start(options).await?;
                ("roubler", h.describe(), g)
            }
            Vendor::Altrata => {
                let (h, g) = sandbox::altrata::start(options).await?;
                ("altrata", h.describe(), g)
            }
            Vendor::Retently => {
                let (h, g) = sandbox::retently::start(options).await?;
                ("retently", h.describe(), g)
            }
        };
        summary.insert(name.to_owned(), describe);
        guards.push(guard);
    }
    println!("{}", serde_json::Value::Object(summary));
    tokio::signal::ctrl_c().await?;
    eprintln!("sandbox: stopping");
    Ok(())
}

fn print_human_summary(sandbox: &Sandbox) {
    let retarus = &sandbox.retarus;
    let altrata = &sandbox.altrata;
    println!();
    println!("Retarus  token   {}", retarus.token_url);
    println!("         graphql {}", retarus.graphql_url);
    println!(
        "         client_id={} client_secret={} customers={}",
        retarus.client_id,
        retarus.client_secret,
        retarus.customer_ids.join(",")
    );
    println!("Altrata  token   {}", altrata.token_url);
    println!("         events  {}", altrata.events_url);
    println!("         profile {}", altrata.profile_url);
    println!(
        "         username={} password={} x-api-key={}",
        altrata.username, altrata.password, altrata.api_key
    );
    println!(
        "Roubler  {}  (endpoints and credentials: see the JSON line above)",
        sandbox.roubler.base_url
    );
    println!(
        "Retently {}  (endpoints and credentials: see the JSON line above)",
        sandbox.retently.base_url
    );
    println!();
    println!("Example (Retarus):");
    println!(
        "  TOKEN=$(curl -s {} -d grant_type=client_credentials -d client_id={} -d client_secret={} -d scope=openid | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')",
        retarus.token_url, retarus.client_id, retarus.client_secret
    );
    let customer = retarus
        .customer_ids
        .first()
        .map(String::as_str)
        .unwrap_or("99999");
    let now = chrono::Utc::now();
    let from = (now - chrono::TimeDelta::days(2)).format("%Y-%m-%dT00:00:00.000Z");
    let to = now.format("%Y-%m-%dT00:00:00.000Z");
    println!(
        "  curl -s {} -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \\\n    -d '{{\"query\":\"{{ faxOutUdrReport(customerId: \\\"{customer}\\\", datePeriod: {{fromIncluded: \\\"{from}\\\", toExcluded: \\\"{to}\\\"}}, size: 3) {{ content {{ faxId keyTimestamp statusName }} pageIndex hasMoreElements }} }}\"}}'",
        retarus.graphql_url
    );
    println!();
    println!("Ctrl-C stops the sandbox.");
}
