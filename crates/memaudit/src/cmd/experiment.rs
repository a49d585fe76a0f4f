//! What every command built on `memaudit-experiments` shares: `--config FILE.toml|.json` and
//! `--print-config`, the rule that flags given on the command line override the file, library
//! errors rendered with the user's flag or file key, and an [`Observer`] that draws progress on
//! stderr.
//!
//! Adding it to a command (phase 2 of issue 13): flatten [`ConfigFlags`] into its clap args,
//! build the config from the args as before, then
//!
//! ```ignore
//! let cfg = match experiment::resolve(&args.config, config_from(args), ctx)? {
//!     Resolved::Run(cfg) => cfg,
//!     Resolved::Printed(report) => return Ok(report),
//! };
//! let job = easy_hard::prepare(&cfg).map_err(|e| experiment::cli_error(e, &args.config))?;
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Result;
use clap::ArgMatches;
use clap::parser::ValueSource;
use memaudit_experiments::{ExperimentConfig, ExperimentError, MetricsRow, Observer, config};

use crate::Ctx;
use crate::error::user;
use crate::output::Report;
use crate::progress::Progress;

/// `--config` and `--print-config`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigFlags {
    /// Read the experiment's settings from a TOML or JSON file (`--print-config` writes one);
    /// flags given on the command line override it.
    #[arg(long, value_name = "FILE.toml|FILE.json")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (file, then flags) as TOML and exit without running.
    #[arg(long)]
    pub print_config: bool,
}

/// A command with `--config` takes its folders from the file too: `--out` (the run folder it
/// writes) and `--run` (the run folder it reads) are no longer required by clap (an empty
/// default), and the experiment's validation names the flag when neither the flag nor the file
/// gives one.
pub fn out_from_config(mut cmd: clap::Command) -> clap::Command {
    let has = |cmd: &clap::Command, id: &str| cmd.get_arguments().any(|a| a.get_id() == id);
    // `print_config` marks [`ConfigFlags`]: `mia` has a `--config` of its own (a JSON of
    // attack settings) and an optional `--out`, which must stay as they are.
    if !(has(&cmd, "config") && has(&cmd, "print_config")) {
        return cmd;
    }
    // Only a folder clap requires is relaxed: an optional one (mia's `--out`: no folder, no
    // files) must stay `None` when not given, not become the current directory.
    let required = |cmd: &clap::Command, id: &str| {
        cmd.get_arguments()
            .any(|a| a.get_id() == id && a.is_required_set())
    };
    for folder in ["out", "run"] {
        if required(&cmd, folder) {
            // clap's path parser refuses the empty default; this one takes it.
            let path = |s: &str| Ok::<_, std::convert::Infallible>(PathBuf::from(s));
            cmd = cmd.mut_arg(folder, |a| {
                a.required(false)
                    .default_value("")
                    .value_parser(clap::builder::ValueParser::new(path))
            });
        }
    }
    cmd
}

static MATCHES: OnceLock<ArgMatches> = OnceLock::new();

/// Keep the parsed command line, so that commands can tell flags given from defaults.
pub fn remember(matches: &ArgMatches) {
    let _ = MATCHES.set(matches.clone());
}

/// The ids of the flags given on the command line of the innermost subcommand (clap ids are the
/// flags' field names: `max_train` for `--max-train`).
pub fn explicit_flags() -> Vec<String> {
    let Some(mut m) = MATCHES.get() else {
        return Vec::new();
    };
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.ids()
        // Group ids (one per flattened struct) may show up too; no config field has their names.
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.to_string())
        .collect()
}

/// A config to run, or the `--print-config` output.
pub enum Resolved<T> {
    Run(T),
    Printed(Report),
}

/// The effective config: `given` (from the flags) alone, or the `--config` file with the flags
/// given on the command line taking precedence. Checked (`validate`) either way.
pub fn resolve<T: ExperimentConfig>(
    flags: &ConfigFlags,
    given: T,
    ctx: &Ctx,
) -> Result<Resolved<T>> {
    resolve_with(flags, given, ctx, |_| Ok(()))
}

/// [`resolve`], with `adjust` applied to the merged config before it is checked and printed:
/// for flags whose names are not their fields' (a command applies them itself) and for
/// defaults that depend on other settings.
pub fn resolve_with<T: ExperimentConfig>(
    flags: &ConfigFlags,
    given: T,
    ctx: &Ctx,
    adjust: impl FnOnce(&mut T) -> Result<()>,
) -> Result<Resolved<T>> {
    let mut cfg = match &flags.config {
        None => given,
        Some(path) => {
            let file: T = config::load(path).map_err(|e| cli_error(e, flags))?;
            let explicit = explicit_flags();
            config::override_fields(&file, &given, &explicit).map_err(|e| cli_error(e, flags))?
        }
    };
    adjust(&mut cfg)?;
    cfg.validate().map_err(|e| cli_error(e, flags))?;
    if flags.print_config {
        let toml = config::to_toml(&cfg).map_err(|e| cli_error(e, flags))?;
        let json = serde_json::to_value(&cfg)?;
        ctx.note(format!(
            "effective configuration of `memaudit {}` (not run)",
            T::NAME
        ));
        return Ok(Resolved::Printed(Report::new(toml, json)));
    }
    Ok(Resolved::Run(cfg))
}

/// The flag of a config field: its last segment, `_` as `-` (`images.max_train` -> `--max-train`),
/// except the fields whose flag has another name.
pub fn flag_of(field: &str) -> String {
    if let Some((_, flag)) = RENAMED_FLAGS.iter().find(|(f, _)| *f == field) {
        return flag.to_string();
    }
    let leaf = field.rsplit('.').next().unwrap_or(field);
    format!("--{}", leaf.replace('_', "-"))
}

/// Config fields whose flag is not their name.
const RENAMED_FLAGS: &[(&str, &str)] = &[
    ("canary.template", "--canary"),
    ("exposure.method", "--exposure"),
    ("template", "--canary"),
    // The model section as a whole (its memory): the model flags together.
    ("model", "model flags"),
];

/// An error of a command that calls the experiments layer without `--config`: the config
/// fields it names become flags (`run.out` -> `--out`), as `cli_error` does.
pub fn with_flag_names(err: anyhow::Error) -> anyhow::Error {
    match err.downcast::<ExperimentError>() {
        Ok(e) => cli_error(e, &ConfigFlags::default()),
        Err(err) => err,
    }
}

/// A library error as the CLI reports it: config fields become the flag that sets them, or the
/// file key when the value came from `--config` and not from a flag.
pub fn cli_error(e: ExperimentError, flags: &ConfigFlags) -> anyhow::Error {
    let name = |field: &str| -> String {
        let leaf = field.rsplit('.').next().unwrap_or(field);
        match &flags.config {
            Some(file) if !explicit_flags().iter().any(|f| f == leaf) => {
                format!("{}: key `{field}`", display(file))
            }
            _ => flag_of(field),
        }
    };
    match e {
        ExperimentError::Invalid {
            field,
            value,
            reason,
        } => user(format!(
            "{} {value}: {}",
            name(&field),
            flags_in_reason(&fields_as_flags(&reason, flags))
        )),
        ExperimentError::Setting { field, source } => {
            user(format!("{}: {}", name(&field), one_line_source(&*source)))
        }
        // `memaudit lower-bound`'s own errors read as before, without the stage.
        ExperimentError::LowerBound { stage, source }
            if stage == memaudit_experiments::lower_bound::STAGE =>
        {
            user(one_line_source(&*source))
        }
        e @ (ExperimentError::Model { .. }
        | ExperimentError::Mia(_)
        | ExperimentError::LowerBound { .. }) => user(one_line_source(&e)),
        ExperimentError::MissingData {
            field,
            name: data,
            source,
        } => user(format!(
            "{} {data}: run `memaudit data fetch --only {data}` first ({source})",
            name(&field)
        )),
        // The library's message already names the file, line and key; its source (the parser's
        // multi-line rendering with a caret) would break the one-line convention.
        e @ (ExperimentError::ConfigFile { .. }
        | ExperimentError::ReadConfig { .. }
        | ExperimentError::ConfigFormat { .. }) => user(e.to_string()),
        e => anyhow::Error::new(e),
    }
}

/// A reason naming other settings as `` `section.field` `` (or `` `a_field` ``): without
/// `--config`, each becomes its flag (`--data`); with one, the key stays.
fn fields_as_flags(reason: &str, flags: &ConfigFlags) -> String {
    if flags.config.is_some() {
        return reason.to_string();
    }
    let mut out = String::new();
    let mut rest = reason;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else {
            break;
        };
        let inner = &rest[start + 1..start + 1 + len];
        out.push_str(&rest[..start]);
        let is_field = (inner.contains('.') || inner.contains('_'))
            && inner
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
        if is_field {
            out.push_str(&flag_of(inner));
        } else {
            out.push_str(&rest[start..start + len + 2]);
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

/// An error and its sources as one line, each piece once.
fn one_line_source(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let s = err.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A reason with the other settings it names by their dotted paths (`model.gpt_context 16`)
/// spelt as flags (`--gpt-context 16`).
fn flags_in_reason(reason: &str) -> String {
    // A file name (`run.json`) is no setting.
    let is_file = |w: &str| {
        w.rsplit_once('.')
            .is_some_and(|(_, ext)| ["json", "toml", "csv", "html", "png"].contains(&ext))
    };
    let is_path = |w: &str| {
        w.contains('.')
            && !is_file(w)
            && w.split('.').all(|seg| {
                seg.len() > 1
                    && seg.starts_with(|c: char| c.is_ascii_lowercase())
                    && seg.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    };
    reason
        .split(' ')
        .map(|word| {
            let core = word
                .trim_start_matches('(')
                .trim_end_matches([')', ',', ';', ':']);
            if is_path(core) {
                word.replacen(core, &flag_of(core), 1)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// What receives the metrics rows (a CSV writer).
type MetricsSink<'a> = Box<dyn FnMut(&MetricsRow) + 'a>;

/// Progress bars and notes on stderr (silenced by `--quiet` and `--json`), metrics rows to a
/// callback (a CSV file).
pub struct CliObserver<'a> {
    label: String,
    quiet: bool,
    bar: Option<Progress>,
    on_metrics: Option<MetricsSink<'a>>,
}

impl<'a> CliObserver<'a> {
    pub fn new(label: &str, ctx: &Ctx) -> Self {
        Self {
            label: label.to_string(),
            quiet: ctx.quiet || ctx.json,
            bar: None,
            on_metrics: None,
        }
    }

    pub fn with_metrics(mut self, f: impl FnMut(&MetricsRow) + 'a) -> Self {
        self.on_metrics = Some(Box::new(f));
        self
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}

impl Observer for CliObserver<'_> {
    fn progress(&mut self, stage: &str, step: u64, total: u64) {
        let (label, quiet) = (&self.label, self.quiet);
        let bar = self
            .bar
            .get_or_insert_with(|| Progress::new(label, total, quiet));
        bar.set_total(total);
        bar.set(step, stage);
    }
    fn note(&mut self, text: &str) {
        match &self.bar {
            Some(b) => b.line(text),
            None if !self.quiet => eprintln!("{text}"),
            None => {}
        }
    }
    fn metrics(&mut self, row: &MetricsRow) {
        if let Some(f) = &mut self.on_metrics {
            f(row);
        }
    }
}

impl Drop for CliObserver<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_named_in_a_reason_become_flags_and_prose_stays() {
        assert_eq!(
            flags_in_reason("is longer than the GPT's table (model.gpt_context 16)"),
            "is longer than the GPT's table (--gpt-context 16)"
        );
        assert_eq!(
            flags_in_reason("x; set canary.extend_vocab to add, e.g. 1.5 or a.b"),
            "x; set --extend-vocab to add, e.g. 1.5 or a.b"
        );
        assert_eq!(flag_of("canary.template"), "--canary");
        assert_eq!(
            flags_in_reason("no run.json (not a memaudit run folder)"),
            "no run.json (not a memaudit run folder)"
        );
    }
}
