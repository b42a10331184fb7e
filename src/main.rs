//! The `retentiond` binary: parse the command line and hand over to the library.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    retentiond::cli::run(retentiond::cli::Cli::parse())
}
