//! `pgrepart`: parse arguments, set up logging, run the subcommand, turn the outcome into an
//! exit code (0 ok, 1 failed, 2 bad usage).

use std::process::ExitCode;

use clap::Parser;
use pgrepart::cli::{Cli, Command, LogFormat};
use pgrepart::commands;

fn init_tracing(cli: &Cli) {
    let default = match cli.verbose {
        0 if cli.quiet => "pgrepart=warn",
        0 => "pgrepart=info",
        1 => "pgrepart=debug",
        _ => "pgrepart=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGREPART_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Printing completions or the manual needs no logs, runtime or connection.
    match &cli.command {
        Command::Completions(args) => {
            commands::docs::completions(args.shell, &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            return match commands::docs::man(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    init_tracing(&cli);
    pgrepart::monitor::set_quiet(cli.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Plan(args) => commands::plan::run(args).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Cutover(args) => commands::cutover::run(args).await,
            Command::Abort(args) => commands::abort::run(args).await,
            Command::Revert(args) => commands::window::revert(args).await,
            Command::Finish(args) => commands::window::finish(args).await,
            Command::Pause(args) => commands::pause::run(args, true).await,
            Command::Resume(args) => commands::pause::run(args, false).await,
            Command::Verify(args) => commands::verify::run(args).await,
            Command::Completions(_) | Command::Man => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
