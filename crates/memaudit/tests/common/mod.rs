//! Helpers shared by the CLI tests: run the binary, check the one-line error convention.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

/// Runs memaudit with `args`, without the caller's $MEMAUDIT_DATA (tests must not see real data).
pub fn memaudit(args: &[&str]) -> Output {
    memaudit_env(args, &[])
}

/// As `memaudit`, with extra environment variables.
pub fn memaudit_env(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_memaudit"));
    c.args(args).env_remove("MEMAUDIT_DATA");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().expect("run memaudit")
}

/// Exit code 2 and exactly one `error: ` line, the last on stderr (progress notes may come
/// first without --quiet); returns that line.
pub fn one_line_error(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr.clone()).unwrap();
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert_eq!(
        stderr.trim_end().lines().last(),
        Some(errors[0]),
        "{stderr}"
    );
    errors[0].to_string()
}

/// Exit code 0 and exactly one JSON object on stdout.
pub fn ok_json(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout {}\nstderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// The tiny secret-sharer job several CLI tests share: the embedded corpus, `my pin is
/// {digits:3}` canaries (2 per count, repeated 1 and 4 times, 5 held out) and a 1x16 LSTM on 120
/// windows of 40 characters (seconds per run). Callers add epochs, seed, output and their flags.
pub const TINY_SECRET_SHARER: &[&str] = &[
    "--quiet",
    "secret-sharer",
    "--corpus",
    "embedded",
    "--canary",
    "my pin is {digits:3}",
    "--canaries",
    "2",
    "--repetitions",
    "1,4",
    "--held-out",
    "5",
    "--rnn-hidden",
    "16",
    "--rnn-layers",
    "1",
    "--embed",
    "8",
    "--max-train",
    "120",
    "--seq-len",
    "40",
    "--batch-size",
    "16",
];
