//! The `reporting-etl` binary: all behaviour lives in the library; see `reporting_etl::cli`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    reporting_etl::cli::main().await
}
