//! The sanity checks before private training ("Three Tools for Practical Differential Privacy",
//! van der Veen et al. 2018, tool 1), rendered: the checks themselves run in
//! `memaudit_experiments::sanity` (inside `memaudit_experiments::train::run`); this module writes
//! their report lines.

use memaudit_engine::sampler::SamplingMode;
use memaudit_experiments::sanity::{NOISE_FREE_STEPS, SanityChecks};

use crate::output::fmt_f64;

/// The report lines (printed before training starts).
pub fn render(s: &SanityChecks) -> String {
    let p = &s.plan;
    let (steps, q, epochs) = (s.planned_steps, s.sampling_rate, p.epochs);
    let how = match p.sampling {
        SamplingMode::Poisson => format!("{steps} Poisson steps at q = {q:.6}"),
        SamplingMode::Shuffle => {
            format!("{steps} shuffled steps ({epochs} epochs, no amplification by sampling)")
        }
    };
    let mut lines = vec![
        "Sanity checks before private training (Three Tools for Practical DP ML):".to_string(),
        format!(
            "  1. accounting: {how}, noise multiplier {:.4}, delta {}: epsilon {} (RDP){}",
            p.noise_multiplier,
            p.delta,
            fmt_f64(s.epsilon_rdp.0),
            s.epsilon_pld
                .map_or(String::new(), |e| format!(", {} (PLD)", fmt_f64(e.0)))
        ),
    ];
    let Some(h) = &s.heldout else {
        lines.push("  2-3. skipped: no held-out data to check on".into());
        return lines.join("\n");
    };
    let c = p.clip;
    lines.push(format!(
        "  2. gradients at initialisation, {} held-out examples: {:.1}% clipped at C = {} (median norm {}); signal-to-noise ||mean clipped gradient|| / (sigma C sqrt(d) / B) = {} / {} = {}",
        h.heldout_examples,
        h.clipped_fraction * 100.0,
        fmt_f64(c),
        fmt_f64(h.median_norm.0),
        fmt_f64(h.mean_clipped_gradient_norm.0),
        fmt_f64(h.noise_norm.0),
        fmt_f64(h.signal_to_noise.0)
    ));
    if h.signal_to_noise.0 < 0.1 {
        lines.push("     note: the noise vector's norm is over 10x the mean clipped gradient's; larger batches raise this ratio (tool 3)".into());
    }
    if h.clipped_fraction < 0.05 {
        lines.push("     note: almost nothing is clipped; a smaller --clip would cut the noise (or use --adaptive-clip)".into());
    }
    lines.push(format!(
        "  3. noise-free run ({NOISE_FREE_STEPS} clipped steps on the held-out sample): loss {} -> {}{}",
        fmt_f64(h.noise_free_loss_before.0),
        fmt_f64(h.noise_free_loss_after.0),
        if h.noise_free_learns { " (learns)" } else { "  warning: the loss did not fall: check --lr and --clip before spending privacy" }
    ));
    if let Some(big) = &h.large_batch {
        lines.push(format!(
            "  4. large batches: the same epsilon over the same epochs allows noise multiplier {} at batch {} (vs {} at {}): noise on the averaged gradient sigma C / B = {} vs {} (see `memaudit dp-sweep`)",
            fmt_f64(big.noise_multiplier),
            big.batch_size,
            fmt_f64(p.noise_multiplier),
            p.batch_size,
            fmt_f64(big.noise_multiplier * c / big.batch_size as f64),
            fmt_f64(p.noise_multiplier * c / p.batch_size as f64)
        ));
    }
    lines.join("\n")
}
