//! libFuzzer target: arbitrary bytes as a configuration file (see `reporting_etl_fuzz::config_loader`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| reporting_etl_fuzz::config_loader(data));
