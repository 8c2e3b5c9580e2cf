//! The `reporting-etl` binary: all behaviour lives in the library; see `reporting_etl::cli`.

fn main() -> std::process::ExitCode {
    // Before the runtime's worker threads exist.
    reporting_etl::allocator::tune();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(reporting_etl::cli::main()),
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
