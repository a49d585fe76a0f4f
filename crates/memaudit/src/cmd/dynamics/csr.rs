//! `dynamics csr`: the critical sample ratio (LASS) of a saved run's model
//! (`memaudit_experiments::dynamics::csr`).

#[allow(unused_imports)]
use super::*;
use memaudit_experiments::dynamics::csr::{self as lib, CsrConfig};

fn csr_config(a: &CsrArgs) -> CsrConfig {
    CsrConfig {
        run: a.run.clone(),
        csr_size: a.csr_size,
        lass: a.lass.settings(),
        seed: a.seed,
    }
}

pub(super) fn run(a: &CsrArgs, ctx: &Ctx) -> Result<Report> {
    let cfg = match experiment::resolve(&a.config, csr_config(a), ctx)? {
        Resolved::Run(cfg) => cfg,
        Resolved::Printed(report) => return Ok(report),
    };
    let mut observer = CliObserver::new("csr", ctx);
    let r = lib::run(&cfg, &mut observer).map_err(|e| experiment::cli_error(e, &a.config))?;
    observer.finish();
    let text = format!(
        "CSR {} ({} critical of {} validation examples; LASS r = {}/255, {} iterations, {:.1}s)",
        fmt_f64(r.csr.0),
        r.critical,
        r.examples,
        cfg.lass.lass_r,
        r.iterations,
        r.seconds
    );
    Ok(Report::new(text, serde_json::to_value(&r)?))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        experiment: Experiment,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["memaudit", "csr", "--run", "r"]).unwrap();
        let Experiment::Csr(a) = cli.experiment else {
            panic!("csr expected")
        };
        let mut cfg = csr_config(&a);
        cfg.run = Default::default();
        assert_eq!(cfg, CsrConfig::default());
    }
}
