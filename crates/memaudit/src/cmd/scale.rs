//! Scale-out flags shared by the sharded commands (`exposure`, `mia`): which shard this process
//! runs (`--shard I/N`, or `--shards N` with the index from the scheduler's variable), and
//! `--emit slurm|k8s`, which writes the job files that run every shard as an array task plus an
//! aggregation job that merges them (see docs/scale-out.md). The shard protocol itself (units,
//! headers, scanning) is `memaudit_engine::shard`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use memaudit_engine::shard::Shard;

use crate::error::user;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// An `sbatch` array script, an aggregation script with `--dependency=afterok`, and
    /// `submit.sh` that submits both.
    Slurm,
    /// A Kubernetes Indexed Job manifest, an aggregation Job, and `submit.sh`.
    K8s,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// Run shard I of N (0 <= I < N) and write it into --shard-dir as an atomic unit; a finished
    /// shard is skipped on rerun. Combine the shards with `memaudit merge DIR`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// The number of shards N, with the index I taken from SLURM_ARRAY_TASK_ID,
    /// JOB_COMPLETION_INDEX or AWS_BATCH_JOB_ARRAY_INDEX. N is never taken from the scheduler
    /// (resubmitting failed tasks alone must not change it). With --emit: how many tasks.
    #[arg(long, value_name = "N")]
    pub shards: Option<u64>,
    /// The folder the shards are written into (one `shard-I-of-N/` unit each).
    #[arg(long, value_name = "DIR")]
    pub shard_dir: Option<PathBuf>,
    /// Write job files for a scheduler into --emit-dir instead of running anything.
    #[arg(long, value_enum, requires = "shards")]
    pub emit: Option<Emit>,
    /// Where --emit writes its files (default: the shard folder).
    #[arg(long, value_name = "DIR", requires = "emit")]
    pub emit_dir: Option<PathBuf>,
    /// --emit: at most K array tasks at once (Slurm `%K`; Kubernetes `parallelism`).
    #[arg(long, value_name = "K", requires = "emit")]
    pub throttle: Option<u64>,
    /// --emit: cores per task; the task runs with exactly this many threads (`--threads`), which
    /// with a fixed batch split makes results bit-identical across reruns.
    #[arg(long, value_name = "C", default_value_t = 2, requires = "emit")]
    pub cpus_per_task: u32,
    /// --emit: memory per task (Slurm syntax, e.g. 4G).
    #[arg(long, value_name = "MEM", default_value = "4G", requires = "emit")]
    pub mem: String,
    /// --emit slurm: wall-time limit per task (Slurm syntax).
    #[arg(long, value_name = "T", default_value = "04:00:00", requires = "emit")]
    pub time: String,
    /// --emit slurm: the partition (default: the cluster's default).
    #[arg(long, value_name = "P", requires = "emit")]
    pub partition: Option<String>,
    /// --emit k8s: the container image that has `memaudit` on its PATH.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "memaudit:latest",
        requires = "emit"
    )]
    pub image: String,
    /// --emit k8s: a PersistentVolumeClaim mounted at the same paths the command uses.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "memaudit-data",
        requires = "emit"
    )]
    pub pvc: String,
    /// --emit k8s: where the PersistentVolumeClaim is mounted in every pod; every path the
    /// command uses (inputs and the shard folder) must lie under it.
    #[arg(long, value_name = "PATH", default_value = "/data", requires = "emit")]
    pub mount: PathBuf,
    /// --emit: the memaudit binary the jobs run (default: this one, by absolute path, for
    /// Slurm; `memaudit` on the image's PATH for Kubernetes).
    #[arg(long, value_name = "PATH", requires = "emit")]
    pub binary: Option<PathBuf>,
}

impl ShardArgs {
    /// Whether any shard flag was given.
    pub fn requested(&self) -> bool {
        self.shard.is_some() || self.shards.is_some()
    }

    /// The shard this process runs (None: an ordinary single-process run).
    pub fn resolve(&self) -> Result<Option<Shard>> {
        if self.emit.is_some() {
            return Ok(None);
        }
        Shard::resolve(self.shard.as_deref(), self.shards, |v| {
            std::env::var(v).ok()
        })
        .map_err(|e| user(e.to_string()))
    }

    /// The shard folder, required for sharded runs.
    pub fn dir(&self) -> Result<&Path> {
        self.shard_dir
            .as_deref()
            .ok_or_else(|| user("--shard-dir DIR is required with --shard/--shards"))
    }
}

/// Test-only fault injection for the shard writers, passed to `memaudit_engine::shard::write`:
/// with `MEMAUDIT_TEST_FAIL_SHARD=I` and `MEMAUDIT_ALLOW_FAULT_INJECTION=1`, shard I aborts after
/// writing its result but before the rename, as a task killed mid-write would. Both variables
/// are needed so it cannot be enabled by accident, and it says so loudly; the scheduler tests use
/// it to show that a failed task leaves nothing a merge would use and that resubmitting it alone
/// finishes the job.
pub fn fault_injection_before_commit(shard: Shard) {
    if std::env::var("MEMAUDIT_ALLOW_FAULT_INJECTION").as_deref() != Ok("1") {
        return;
    }
    if let Ok(v) = std::env::var("MEMAUDIT_TEST_FAIL_SHARD")
        && v.trim().parse::<u64>().ok() == Some(shard.index)
    {
        eprintln!(
            "memaudit: FAULT INJECTION (test only): shard {shard} aborts before committing its result"
        );
        std::process::abort();
    }
}

/// Make a path absolute (job scripts run from another directory).
pub fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| user(format!("{}: {e}", p.display())))
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,%+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn yaml_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', r"\\").replace('"', "\\\""))
}

/// What a sharded job runs: `shard_args` are the subcommand and its flags without any shard
/// flag (paths absolute); the emitted task adds `--shards N --shard-dir DIR`, and the
/// aggregation job runs `merge DIR` plus `merge_args`.
pub struct JobSpec<'a> {
    pub name: &'a str,
    pub shard_args: Vec<String>,
    pub merge_args: Vec<String>,
    pub shard_dir: PathBuf,
}

/// Write the job files for `spec` into the emit folder; returns the files written and a note.
pub fn emit(args: &ShardArgs, spec: &JobSpec) -> Result<(Vec<PathBuf>, String)> {
    let n = args.shards.ok_or_else(|| user("--emit needs --shards N"))?;
    if n == 0 {
        return Err(user("--shards: the shard count N must be at least 1"));
    }
    if let Some(k) = args.throttle
        && k == 0
    {
        return Err(user("--throttle must be at least 1"));
    }
    if args.cpus_per_task == 0 {
        return Err(user("--cpus-per-task must be at least 1"));
    }
    let dir = absolute(args.emit_dir.as_deref().unwrap_or(&spec.shard_dir))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| user(format!("--emit-dir {}: {e}", dir.display())))?;
    let shard_dir = absolute(&spec.shard_dir)?;
    let mut written = Vec::new();
    let write = |name: &str, text: String, exec: bool, written: &mut Vec<PathBuf>| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| user(format!("{}: {e}", p.display())))?;
        #[cfg(unix)]
        if exec {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
        }
        let _ = exec;
        written.push(p);
        Ok(())
    };
    let threads = args.cpus_per_task.to_string();
    let mut task: Vec<String> = vec!["--threads".into(), threads.clone(), "--quiet".into()];
    task.extend(spec.shard_args.iter().cloned());
    task.extend([
        "--shards".into(),
        n.to_string(),
        "--shard-dir".into(),
        shard_dir.display().to_string(),
    ]);
    let mut merge: Vec<String> = vec![
        "--threads".into(),
        threads,
        "merge".into(),
        shard_dir.display().to_string(),
    ];
    merge.extend(spec.merge_args.iter().cloned());
    let job = format!("memaudit-{}", spec.name);
    // Relative paths in the command resolve against the folder --emit ran in, as they would
    // have for the command itself: the jobs start there (Slurm --chdir, Kubernetes workingDir).
    let cwd = std::env::current_dir().map_err(|e| user(format!("current folder: {e}")))?;
    let note = match args.emit.expect("emit requested") {
        Emit::Slurm => {
            let bin = match &args.binary {
                Some(b) => absolute(b)?,
                None => std::env::current_exe().map_err(|e| {
                    user(format!(
                        "cannot find this binary for the job script: {e}; pass --binary"
                    ))
                })?,
            };
            let bin = sh_quote(&bin.display().to_string());
            let logs = dir.join("logs");
            let part = args
                .partition
                .as_ref()
                .map(|p| format!("#SBATCH --partition={p}\n"))
                .unwrap_or_default();
            let throttle = args.throttle.map(|k| format!("%{k}")).unwrap_or_default();
            let cmd: Vec<String> = task.iter().map(|a| sh_quote(a)).collect();
            write(
                "array.sbatch",
                format!(
                    "#!/bin/bash\n\
                     # memaudit {name}: one array task per shard (index from SLURM_ARRAY_TASK_ID,\n\
                     # count fixed at {n} below, never taken from the scheduler). A finished shard is\n\
                     # skipped on rerun, so resubmitting only failed tasks (--array=3) is safe.\n\
                     #SBATCH --job-name={job}\n\
                     #SBATCH --array=0-{last}{throttle}\n\
                     #SBATCH --cpus-per-task={cpus}\n\
                     #SBATCH --mem={mem}\n\
                     #SBATCH --time={time}\n\
                     {part}\
                     #SBATCH --output={logs}/shard-%a.out\n\
                     #SBATCH --chdir={cwd}\n\
                     set -euo pipefail\n\
                     exec {bin} {cmd}\n",
                    name = spec.name,
                    last = n - 1,
                    cpus = args.cpus_per_task,
                    mem = args.mem,
                    time = args.time,
                    logs = logs.display(),
                    cwd = cwd.display(),
                    cmd = cmd.join(" "),
                ),
                false,
                &mut written,
            )?;
            let mcmd: Vec<String> = merge.iter().map(|a| sh_quote(a)).collect();
            write(
                "merge.sbatch",
                format!(
                    "#!/bin/bash\n\
                     # memaudit {name}: merge the {n} shards once every array task succeeded\n\
                     # (submitted with --dependency=afterok:<array job id> by submit.sh).\n\
                     #SBATCH --job-name={job}-merge\n\
                     #SBATCH --cpus-per-task={cpus}\n\
                     #SBATCH --mem={mem}\n\
                     #SBATCH --time={time}\n\
                     {part}\
                     #SBATCH --output={logs}/merge.out\n\
                     #SBATCH --chdir={cwd}\n\
                     set -euo pipefail\n\
                     exec {bin} {mcmd} --out {result}\n",
                    name = spec.name,
                    cpus = args.cpus_per_task,
                    mem = args.mem,
                    time = args.time,
                    logs = logs.display(),
                    cwd = cwd.display(),
                    mcmd = mcmd.join(" "),
                    result = sh_quote(&dir.join("merged.json").display().to_string()),
                ),
                false,
                &mut written,
            )?;
            write(
                "submit.sh",
                format!(
                    "#!/bin/bash\n\
                     # Submit the shard array, then the merge job that runs only if every task succeeded.\n\
                     set -euo pipefail\n\
                     cd {dir}\n\
                     mkdir -p {logs}\n\
                     array=$(sbatch --parsable array.sbatch)\n\
                     array=${{array%%;*}}\n\
                     merge=$(sbatch --parsable --dependency=afterok:$array merge.sbatch)\n\
                     echo \"submitted array job $array ({n} tasks) and merge job ${{merge%%;*}}\"\n",
                    dir = sh_quote(&dir.display().to_string()),
                    logs = sh_quote(&logs.display().to_string()),
                ),
                true,
                &mut written,
            )?;
            format!(
                "wrote {} for {n} Slurm array tasks{}; submit with `bash {}`",
                written
                    .iter()
                    .map(|p| p
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                args.throttle
                    .map(|k| format!(", at most {k} at once"))
                    .unwrap_or_default(),
                dir.join("submit.sh").display()
            )
        }
        Emit::K8s => {
            let bin = args
                .binary
                .as_ref()
                .map(|b| b.display().to_string())
                .unwrap_or_else(|| "memaudit".into());
            let parallelism = args.throttle.unwrap_or(n).min(n);
            let list = |v: &[String]| {
                std::iter::once(bin.clone())
                    .chain(v.iter().cloned())
                    .map(|a| yaml_quote(&a))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let mount = |indent: &str| {
                format!(
                    "{indent}volumeMounts:\n{indent}- name: data\n{indent}  mountPath: {path}\n",
                    path = yaml_quote(&args.mount.display().to_string()),
                )
            };
            let pod = |cmd: String, extra_env: &str| {
                format!(
                    "      restartPolicy: Never\n\
                     \x20     containers:\n\
                     \x20     - name: memaudit\n\
                     \x20       image: {image}\n\
                     \x20       command: [{cmd}]\n\
                     \x20       workingDir: {wd}\n\
                     {extra_env}\
                     \x20       resources:\n\
                     \x20         requests: {{cpu: \"{cpus}\", memory: \"{mem}\"}}\n\
                     \x20         limits: {{cpu: \"{cpus}\", memory: \"{mem}\"}}\n\
                     {mount}\
                     \x20     volumes:\n\
                     \x20     - name: data\n\
                     \x20       persistentVolumeClaim: {{claimName: {pvc}}}\n",
                    image = yaml_quote(&args.image),
                    wd = yaml_quote(&cwd.display().to_string()),
                    cpus = args.cpus_per_task,
                    mem = k8s_mem(&args.mem),
                    mount = mount("        "),
                    pvc = yaml_quote(&args.pvc),
                )
            };
            write(
                "job.yaml",
                format!(
                    "# memaudit {name}: a Kubernetes Indexed Job, one completion index per shard. The index\n\
                     # comes from JOB_COMPLETION_INDEX; the count ({n}) is fixed in the command, since\n\
                     # Kubernetes does not export it. The PVC must hold the inputs and the shard folder\n\
                     # at the paths below.\n\
                     apiVersion: batch/v1\n\
                     kind: Job\n\
                     metadata:\n\
                     \x20 name: {job}\n\
                     spec:\n\
                     \x20 completionMode: Indexed\n\
                     \x20 completions: {n}\n\
                     \x20 parallelism: {parallelism}\n\
                     \x20 backoffLimitPerIndex: 2\n\
                     \x20 template:\n\
                     \x20   spec:\n\
                     {pod}",
                    name = spec.name,
                    pod = pod(list(&task), ""),
                ),
                false,
                &mut written,
            )?;
            let mut mergecmd = merge.clone();
            mergecmd.extend([
                "--out".into(),
                dir.join("merged.json").display().to_string(),
            ]);
            write(
                "merge-job.yaml",
                format!(
                    "# memaudit {name}: merge the {n} shards; apply after {job} has completed (submit.sh waits).\n\
                     apiVersion: batch/v1\n\
                     kind: Job\n\
                     metadata:\n\
                     \x20 name: {job}-merge\n\
                     spec:\n\
                     \x20 backoffLimit: 1\n\
                     \x20 template:\n\
                     \x20   spec:\n\
                     {pod}",
                    name = spec.name,
                    pod = pod(list(&mergecmd), ""),
                ),
                false,
                &mut written,
            )?;
            write(
                "submit.sh",
                format!(
                    "#!/bin/bash\n\
                     # Kubernetes has no job dependencies: run the indexed job, wait for it, then merge.\n\
                     set -euo pipefail\n\
                     cd {dir}\n\
                     kubectl apply -f job.yaml\n\
                     kubectl wait --for=condition=complete --timeout=24h job/{job}\n\
                     kubectl apply -f merge-job.yaml\n\
                     kubectl wait --for=condition=complete --timeout=1h job/{job}-merge\n",
                    dir = sh_quote(&dir.display().to_string()),
                ),
                true,
                &mut written,
            )?;
            format!(
                "wrote job.yaml (Indexed Job, {n} completions, parallelism {parallelism}), merge-job.yaml and submit.sh into {}",
                dir.display()
            )
        }
    };
    Ok((written, note))
}

/// Slurm memory ("4G", "500M") as a Kubernetes quantity ("4Gi", "500Mi").
fn k8s_mem(m: &str) -> String {
    let m = m.trim();
    match m.chars().last() {
        Some('G' | 'g') => format!("{}Gi", &m[..m.len() - 1]),
        Some('M' | 'm') => format!("{}Mi", &m[..m.len() - 1]),
        Some('K' | 'k') => format!("{}Ki", &m[..m.len() - 1]),
        Some('T' | 't') => format!("{}Ti", &m[..m.len() - 1]),
        _ => format!("{m}Mi"), // Slurm's default unit is megabytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a/b-c"), "a/b-c");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(yaml_quote(r#"a"b"#), r#""a\"b""#);
        assert_eq!(k8s_mem("4G"), "4Gi");
        assert_eq!(k8s_mem("512"), "512Mi");
    }
}
