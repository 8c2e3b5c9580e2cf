//! libFuzzer target: arbitrary bytes as rate-limit headers (see `reporting_etl_fuzz::rate_headers`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporting_etl_fuzz::rate_headers(data));
