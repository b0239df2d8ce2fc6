use clap::Parser as _;

// jemalloc with transparent huge pages: the flow table is a large, randomly accessed hash
// table, and on virtual machines (nested paging) TLB misses, not cache misses, dominated its
// lookups. THP here is `madvise`-only by default, so the allocator has to ask for it.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8] = b"thp:always,metadata_thp:auto\0";
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match sensor::cli::run(sensor::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(sensor::cli::exit_code(&e))
        }
    }
}
