//! Scale-out through the binary (issue: shards on a scheduler): N local processes give the same
//! exact ranks and exposures as one process for N = 1, 2, 3 and 7; a shard killed mid-write
//! leaves nothing a merge would use, and rerunning it alone completes the job; finished shards
//! are skipped; bad shard selections and merge folders are one-line errors. The Slurm test is
//! `scripts/slurm_test.sh` (run by `.ci/run`).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// A tiny secret-sharer run on the embedded corpus with a 10^4 space (seconds).
fn tiny_run(dir: &Path) -> String {
    let out = dir.join("run").to_str().unwrap().to_string();
    let j = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "secret-sharer",
        "--corpus",
        "embedded",
        "--canary",
        "my pin is {digits:4}",
        "--canaries",
        "2",
        "--repetitions",
        "1,8",
        "--held-out",
        "3",
        "--rnn-hidden",
        "16",
        "--rnn-layers",
        "1",
        "--embed",
        "8",
        "--max-train",
        "200",
        "--seq-len",
        "40",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--extract-budget",
        "0",
        "--seed",
        "5",
        "--out",
        &out,
    ]));
    assert!(j.get("canaries").is_some(), "{j}");
    out
}

fn ranks(v: &Value) -> Vec<(String, u64, f64)> {
    v["canaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["rank"].as_u64().unwrap(),
                c["exposure"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn local_shards_equal_one_process_and_survive_a_killed_shard() {
    let d = tempfile::tempdir().unwrap();
    let run = tiny_run(d.path());
    let single = ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "exposure",
        "--run",
        &run,
        "--exposure",
        "exact",
    ]));
    let want = ranks(&single);
    assert_eq!(want.len(), 2 + 2 + 3, "{single}");

    for n in [1u64, 2, 3, 7] {
        let dir = d.path().join(format!("shards-{n}"));
        let dir = dir.to_str().unwrap();
        for i in 0..n {
            let spec = format!("{i}/{n}");
            let j = ok_json(&memaudit(&[
                "--quiet",
                "--json",
                "exposure",
                "--run",
                &run,
                "--shard",
                &spec,
                "--shard-dir",
                dir,
            ]));
            assert_eq!(j["skipped"], false, "{j}");
        }
        let merged = ok_json(&memaudit(&["--quiet", "--json", "merge", dir]));
        assert_eq!(merged["shards"], n);
        assert_eq!(ranks(&merged), want, "{n} shards");
        assert!(merged["candidates_scored"].as_u64().unwrap() <= 10_000);
    }

    // Shard 1 of 3 through the scheduler's variable, killed after writing but before its
    // rename (test-only fault injection): the merge names it as missing and uses nothing of it.
    let dir = d.path().join("killed");
    let dir = dir.to_str().unwrap();
    for (i, var) in [(0, "SLURM_ARRAY_TASK_ID"), (2, "JOB_COMPLETION_INDEX")] {
        let idx = i.to_string();
        ok_json(&memaudit_env(
            &[
                "--quiet",
                "--json",
                "exposure",
                "--run",
                &run,
                "--shards",
                "3",
                "--shard-dir",
                dir,
            ],
            &[(var, &idx)],
        ));
    }
    let killed = memaudit_env(
        &[
            "--quiet",
            "exposure",
            "--run",
            &run,
            "--shards",
            "3",
            "--shard-dir",
            dir,
        ],
        &[
            ("AWS_BATCH_JOB_ARRAY_INDEX", "1"),
            ("MEMAUDIT_ALLOW_FAULT_INJECTION", "1"),
            ("MEMAUDIT_TEST_FAIL_SHARD", "1"),
        ],
    );
    assert!(!killed.status.success());
    assert!(
        String::from_utf8_lossy(&killed.stderr).contains("FAULT INJECTION"),
        "{}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let temps: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert_eq!(temps.len(), 1, "the killed shard left its temporary folder");
    let err = one_line_error(&memaudit(&["merge", dir]));
    assert!(
        err.contains("missing") && err.contains("indices 1"),
        "{err}"
    );
    // Rerun: the finished shards are skipped, the failed one completes, the merge matches.
    for i in 0..3 {
        let spec = format!("{i}/3");
        let j = ok_json(&memaudit(&[
            "--quiet",
            "--json",
            "exposure",
            "--run",
            &run,
            "--shard",
            &spec,
            "--shard-dir",
            dir,
        ]));
        assert_eq!(j["skipped"], i != 1, "shard {i}: {j}");
    }
    let merged = ok_json(&memaudit(&["--quiet", "--json", "merge", dir]));
    assert_eq!(ranks(&merged), want);
    let leftovers = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .count();
    assert_eq!(leftovers, 0, "the rerun removed the stale temporary folder");

    // A shard of another job (different model) in the same folder is refused by the merge.
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    ok_json(&memaudit(&[
        "--quiet",
        "--json",
        "exposure",
        "--run",
        &run,
        "--shard",
        "0/2",
        "--shard-dir",
        other.to_str().unwrap(),
    ]));
    let mut unit = std::fs::read_to_string(other.join("shard-0-of-2/shard.json")).unwrap();
    unit = unit.replace("\"count\": 2", "\"count\": 3");
    std::fs::create_dir_all(other.join("shard-1-of-3")).unwrap();
    std::fs::write(
        other.join("shard-1-of-3/shard.json"),
        unit.replace("\"index\": 0", "\"index\": 1"),
    )
    .unwrap();
    let key = serde_json::from_str::<Value>(
        &std::fs::read_to_string(other.join("shard-0-of-2/shard.json")).unwrap(),
    )
    .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(other.join("shard-1-of-3/COMPLETE"), key).unwrap();
    let err = one_line_error(&memaudit(&["merge", other.to_str().unwrap()]));
    assert!(err.contains("different jobs"), "{err}");
}

#[test]
fn bad_shard_selection_is_a_one_line_error() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("s");
    let dir = dir.to_str().unwrap();
    let run = d.path().join("no-run");
    let run = run.to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["--shard", "3/3"], &[], "out of range"),
        (&["--shard", "0/0"], &[], "at least 1"),
        (&["--shard", "x"], &[], "I/N"),
        (&["--shards", "0"], &[], "at least 1"),
        (&["--shards", "4"], &[], "no shard index"),
        (
            &["--shards", "4"],
            &[("SLURM_ARRAY_TASK_ID", "two")],
            "SLURM_ARRAY_TASK_ID",
        ),
        (
            &["--shards", "4"],
            &[("JOB_COMPLETION_INDEX", "4")],
            "out of range",
        ),
    ];
    for (flags, env, want) in cases {
        let mut args = vec!["exposure", "--run", run, "--shard-dir", dir];
        args.extend_from_slice(flags);
        let err = one_line_error(&memaudit_env(&args, env));
        assert!(err.contains(want), "{flags:?} {env:?}: {err}");
    }
    let err = one_line_error(&memaudit(&["exposure", "--run", run, "--shard", "0/2"]));
    assert!(err.contains("--shard-dir"), "{err}");
    std::fs::create_dir_all(dir).unwrap();
    let err = one_line_error(&memaudit(&["merge", dir]));
    assert!(err.contains("no finished shards"), "{err}");
    let err = one_line_error(&memaudit(&[
        "merge",
        d.path().join("absent").to_str().unwrap(),
    ]));
    assert!(err.contains("absent"), "{err}");
}

#[test]
fn emitted_job_files_fix_the_count_and_throttle() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("jobs");
    let dir = dir.to_str().unwrap();
    let run = d.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let out = memaudit(&[
        "exposure",
        "--run",
        run.to_str().unwrap(),
        "--shards",
        "16",
        "--shard-dir",
        dir,
        "--emit",
        "slurm",
        "--throttle",
        "4",
        "--cpus-per-task",
        "2",
        "--mem",
        "3G",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let array = std::fs::read_to_string(Path::new(dir).join("array.sbatch")).unwrap();
    assert!(array.contains("#SBATCH --array=0-15%4"), "{array}");
    assert!(array.contains("--shards 16"), "{array}");
    assert!(array.contains("--threads 2"), "{array}");
    assert!(array.contains("#SBATCH --mem=3G"), "{array}");
    assert!(!array.contains("SLURM_ARRAY_TASK_COUNT"), "{array}");
    let submit = std::fs::read_to_string(Path::new(dir).join("submit.sh")).unwrap();
    assert!(submit.contains("--dependency=afterok:$array"), "{submit}");
    let merge = std::fs::read_to_string(Path::new(dir).join("merge.sbatch")).unwrap();
    assert!(merge.contains(" merge "), "{merge}");

    let k = d.path().join("k8s");
    let out = memaudit(&[
        "exposure",
        "--run",
        run.to_str().unwrap(),
        "--shards",
        "8",
        "--shard-dir",
        dir,
        "--emit",
        "k8s",
        "--emit-dir",
        k.to_str().unwrap(),
        "--throttle",
        "3",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = std::fs::read_to_string(k.join("job.yaml")).unwrap();
    for want in [
        "completionMode: Indexed",
        "completions: 8",
        "parallelism: 3",
        "\"--shards\", \"8\"",
    ] {
        assert!(job.contains(want), "{want}: {job}");
    }
    assert!(k.join("merge-job.yaml").is_file());
    let err = one_line_error(&memaudit(&[
        "exposure",
        "--run",
        run.to_str().unwrap(),
        "--shard-dir",
        dir,
        "--emit",
        "slurm",
    ]));
    assert!(err.contains("--shards"), "{err}");
}

fn attacks(v: &Value) -> Vec<(String, String)> {
    // (attack, AUC and TPRs as printed): the merged attack must equal the single-process one.
    v["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["attack"].as_str().unwrap().to_string(),
                format!("{} {}", a["auc"], a["tpr_at_fpr"]),
            )
        })
        .collect()
}

/// Shadow models by pair: N = 1, 2, 3 and 7 local shard processes (7 > the 3 work items: some
/// shards are empty) and a merge give exactly the attack
/// results of one process (seeded models, fixed thread count), each into a fresh cache; a rerun
/// skips a finished shard.
#[test]
fn shadow_model_shards_equal_one_process() {
    let d = tempfile::tempdir().unwrap();
    let common = |cache: &str, out: &str| -> Vec<String> {
        [
            "--threads",
            "2",
            "mia",
            "--data",
            "digits",
            "--model",
            "mlp",
            "--pairs",
            "2",
            "--epochs",
            "1",
            "--seed",
            "3",
            "--attack",
            "loss,lira-offline,rmia-offline",
            "--cache",
            cache,
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let p = |name: &str| d.path().join(name).to_str().unwrap().to_string();
    let mut args = common(&p("cache-1"), &p("single"));
    args.extend(["--json".into(), "--quiet".into()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let single = ok_json(&memaudit(&refs));
    assert_eq!(single["models_trained"], 5);
    let want = attacks(&single);
    for n in [1u64, 2, 3, 7] {
        let shards = p(&format!("mia-shards-{n}"));
        let (cache, out) = (p(&format!("cache-s{n}")), p(&format!("merged-{n}")));
        for i in 0..n {
            let mut a = common(&cache, &out);
            a.extend([
                "--json".into(),
                "--quiet".into(),
                "--shard".into(),
                format!("{i}/{n}"),
                "--shard-dir".into(),
                shards.clone(),
            ]);
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            let j = ok_json(&memaudit(&refs));
            assert_eq!(j["skipped"], false, "{j}");
        }
        let merged = ok_json(&memaudit(&["--quiet", "--json", "merge", &shards]));
        assert_eq!(
            merged["models_trained"], 0,
            "the merge trains nothing: {merged}"
        );
        assert_eq!(attacks(&merged), want, "{n} shards");
    }
    // A rerun of a finished shard is skipped.
    let mut a = common(&p("cache-s2"), &p("merged-2"));
    a.extend([
        "--json".into(),
        "--shard".into(),
        "1/2".into(),
        "--shard-dir".into(),
        p("mia-shards-2"),
    ]);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    assert_eq!(ok_json(&memaudit(&refs))["skipped"], true);
}
