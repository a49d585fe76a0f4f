//! Memory a job needs, estimated before anything is allocated, against the memory the machine
//! can give. A model or a buffer too large for the machine would otherwise abort the process in
//! the allocator ("memory allocation failed"), with no error a caller can report and, for a
//! training run, its run folder left marked as running.
//!
//! The estimates are lower bounds (what certainly has to be held at once), so a refusal is never
//! wrong; a job that passes can still run short on activations, which depend on the data.

use crate::error::{EngineError, Result};
use crate::optim::OptimizerConfig;

/// Bytes of one parameter (f32).
const PARAM_BYTES: u64 = 4;

/// The least memory training holds at once, in bytes, for `num_params` f32 parameters: the
/// weights, their gradient, the optimizer's per-parameter buffers (SGD momentum 1, Adam 2,
/// RMSprop 1 or 2) and, for DP-SGD, the noise vector. Saturates instead of overflowing.
pub fn training_bytes(num_params: usize, optimizer: &OptimizerConfig, private: bool) -> u64 {
    let buffers: u64 = match optimizer {
        OptimizerConfig::Sgd { momentum, .. } => u64::from(*momentum > 0.0),
        OptimizerConfig::Adam { .. } => 2,
        OptimizerConfig::RmsProp { momentum, .. } => 1 + u64::from(*momentum > 0.0),
    };
    let copies = 2 + buffers + u64::from(private);
    (num_params as u64)
        .saturating_mul(PARAM_BYTES)
        .saturating_mul(copies)
}

/// Memory this process can still allocate, in bytes: the kernel's `MemAvailable`, lowered to
/// the cgroup's limit minus its usage when the process runs in a limited container. `None` where
/// neither can be read (not Linux): callers then skip the check rather than guess.
pub fn available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let mem_available = meminfo.as_deref().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib.saturating_mul(1024))
    });
    let read_u64 = |p: &str| -> Option<u64> {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    // cgroup v2, then v1 (v1 reports "no limit" as a huge number, which the min ignores).
    let cgroup_left = read_u64("/sys/fs/cgroup/memory.max")
        .zip(read_u64("/sys/fs/cgroup/memory.current"))
        .or_else(|| {
            read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes")
                .zip(read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
        })
        .map(|(limit, used)| limit.saturating_sub(used));
    match (mem_available, cgroup_left) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// Bytes as GiB with two decimals (MiB below one GiB), for messages.
pub fn format_bytes(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Refuse `needed` bytes when more than `available` (when known), with both in the error.
pub fn check_fits(what: &str, needed: u64, available: Option<u64>) -> Result<()> {
    match available {
        Some(available) if needed > available => Err(EngineError::OutOfMemory {
            what: what.to_string(),
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sgd(momentum: f32) -> OptimizerConfig {
        OptimizerConfig::Sgd {
            lr: 0.1,
            momentum,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    #[test]
    fn training_bytes_count_weights_gradient_and_optimizer_buffers() {
        assert_eq!(training_bytes(1000, &sgd(0.0), false), 1000 * 4 * 2);
        assert_eq!(training_bytes(1000, &sgd(0.9), false), 1000 * 4 * 3);
        let adam = OptimizerConfig::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        assert_eq!(training_bytes(1000, &adam, true), 1000 * 4 * 5);
        assert_eq!(training_bytes(usize::MAX, &adam, true), u64::MAX);
    }

    #[test]
    fn check_fits_refuses_only_what_exceeds_a_known_limit() {
        assert!(check_fits("x", 10, Some(10)).is_ok());
        assert!(check_fits("x", 10, None).is_ok());
        let e = check_fits("training", 3 << 30, Some(1 << 30)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("3.00 GiB") && msg.contains("1.00 GiB"),
            "{msg}"
        );
    }

    #[test]
    fn this_machine_reports_some_available_memory() {
        // Linux CI and the development machines have /proc/meminfo.
        if cfg!(target_os = "linux") {
            assert!(available_bytes().is_some_and(|b| b > 0));
        }
    }
}
