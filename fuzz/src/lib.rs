//! The fuzzed entry points, shared by the cargo-fuzz targets (`fuzz_targets/`, nightly) and a
//! plain random-input loop (`cargo test --release`, any toolchain), so both exercise the same
//! code. Each function must return for every input; a panic is the finding.
//!
//! # Layout
//!
//! - [`config_loader`]: arbitrary bytes as TOML → `app::settings_from_toml` (parse + validate).
//! - [`rate_headers`]: arbitrary bytes as `name: value` lines → `RateHeaders::parse`, plus the
//!   `reset` and `Retry-After` readers on their own.

use chrono::{DateTime, Utc};
use reporting_etl::executor::headers::{RateHeaders, parse_reset, parse_retry_after};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// Loads `data` as a configuration file. Errors are fine; they must name a key.
pub fn config_loader(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A `*_file` key would make the loader read that path; a fuzzer that found /dev/zero would
    // only measure the disk.
    if text
        .lines()
        .any(|line| line.split('#').next().unwrap_or_default().contains("_file"))
    {
        return;
    }
    if let Err(error) = reporting_etl::app::settings_from_toml(text) {
        assert!(!error.problems.is_empty(), "an error without a problem");
        let _ = error.to_string();
    }
}

/// Parses `data` as header lines; every duration that comes out must be finite and non-negative
/// (a `Duration` cannot be otherwise, but building one from a bad float panics).
pub fn rate_headers(data: &[u8]) {
    let now = DateTime::<Utc>::from_timestamp(1_750_000_000, 0).expect("valid timestamp");
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
        if let Ok(value) = std::str::from_utf8(value) {
            let _ = parse_reset(value, now);
            let _ = parse_retry_after(value, now);
        }
    }
    let _ = RateHeaders::parse(&headers, now);
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    //! The stable-toolchain stand-in for libFuzzer: random mutations of the seed corpus for
    //! `FUZZ_SECONDS` (default 5) per target. No coverage guidance, so it finds less; it needs
    //! nothing but `cargo test`.

    use std::time::{Duration, Instant};

    use rand::seq::IndexedRandom;
    use rand::{Rng, SeedableRng};

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        seeds.push(Vec::new());
        seeds
    }

    /// Interesting fragments spliced into inputs (what a dictionary gives libFuzzer).
    const TOKENS: &[&str] = &[
        "=",
        "\"",
        "[",
        "]",
        "{",
        "}",
        ",",
        "\n",
        "-1",
        "0",
        "1e309",
        "NaN",
        "18446744073709551616",
        "[sources.a]\nkind = \"retarus\"\n",
        "[jobs.j]\nsource = \"a\"\n",
        "schedule = \"",
        "time_zone = \"",
        "window = \"trailing\"",
        "rate_limit = { calls = 0, per_ms = 0 }",
        "allow_http = true",
        "x-ratelimit-reset: ",
        "retry-after: ",
        "ratelimit: limit=",
        "ratelimit-policy: 10;w=",
        "9999999999999",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        "L W # ? /",
        "\u{feff}",
        "\u{0}",
        "é",
    ];

    fn mutate(rng: &mut impl Rng, input: &mut Vec<u8>) {
        for _ in 0..rng.random_range(1..8) {
            let at = if input.is_empty() {
                0
            } else {
                rng.random_range(0..=input.len())
            };
            match rng.random_range(0..5) {
                0 if !input.is_empty() => {
                    let i = rng.random_range(0..input.len());
                    input[i] = rng.random();
                }
                1 if !input.is_empty() => {
                    let end = (at + rng.random_range(1..16)).min(input.len());
                    input.drain(at.min(end)..end);
                }
                2 => {
                    let token = TOKENS.choose(rng).expect("tokens");
                    input.splice(at..at, token.bytes());
                }
                3 => {
                    let digits = rng.random::<u64>().to_string();
                    input.splice(at..at, digits.bytes());
                }
                _ => input.insert(at, rng.random_range(0x20..0x7f)),
            }
        }
    }

    fn run(target: &str, entry: fn(&[u8])) {
        let seconds = std::env::var("FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5u64);
        let seed = std::env::var("FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random::<u64>);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let seeds = seeds(target);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut runs = 0u64;
        while Instant::now() < deadline {
            let mut input = seeds.choose(&mut rng).expect("seeds").clone();
            mutate(&mut rng, &mut input);
            let outcome = std::panic::catch_unwind(|| entry(&input));
            assert!(
                outcome.is_ok(),
                "{target} panicked (seed {seed}) on input {:?}",
                String::from_utf8_lossy(&input)
            );
            runs += 1;
        }
        println!("{target}: {runs} random inputs in {seconds} s without a panic (seed {seed})");
    }

    #[test]
    fn the_config_loader_survives_random_input() {
        run("config_loader", super::config_loader);
    }

    #[test]
    fn the_rate_header_parser_survives_random_input() {
        run("rate_headers", super::rate_headers);
    }
}
