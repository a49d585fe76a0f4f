//! `dynamics csr`: the critical sample ratio (LASS) of a saved run's model.

#[allow(unused_imports)]
use super::*;

pub(super) fn run(a: &CsrArgs, ctx: &Ctx) -> Result<Report> {
    let lass = a.lass.config()?;
    if a.csr_size == 0 {
        return Err(user(
            "--csr-size 0: LASS needs at least 1 validation example",
        ));
    }
    // Refuse a model LASS cannot probe before reading its weights.
    let declared = std::fs::read(a.run.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| {
            serde_json::from_value::<ModelConfig>(v["config"]["train"]["model"].clone()).ok()
        });
    if let Some(m) = declared {
        dynamics::require_dense_classifier(&m)
            .map_err(|e| user(format!("--run {}: {e}", a.run.display())))?;
    }
    let saved = crate::cmd::eval::load_run(&a.run)?;
    dynamics::require_dense_classifier(&saved.config.model)
        .map_err(|e| user(format!("--run {}: {e}", a.run.display())))?;
    if !saved.data.is_image() {
        return Err(user(format!(
            "--run {}: trained on --data {}, not images in [0, 1]; LASS's radius is defined for pixels",
            a.run.display(),
            saved.data.data
        )));
    }
    let img = saved.data.images()?;
    let model = saved.config.model.build()?;
    let mut valid = img
        .test
        .subset(&(0..a.csr_size.min(img.test.labels.len())).collect::<Vec<_>>());
    if matches!(saved.config.model, ModelConfig::Mlp { .. }) {
        valid = flat(valid);
    }
    ctx.note(format!(
        "LASS on {} validation examples of {}",
        valid.labels.len(),
        saved.data.data
    ));
    let mut rng = rand::rngs::StdRng::seed_from_u64(a.seed);
    let started = std::time::Instant::now();
    let o = dynamics::lass(
        &model,
        &saved.checkpoint.params,
        &valid.x,
        &valid.example_shape,
        &lass,
        &mut rng,
    )
    .map_err(lib)?;
    let secs = started.elapsed().as_secs_f64();
    let critical = o.critical.iter().filter(|&&c| c).count();
    let j = json!({ "run": a.run.display().to_string(), "examples": valid.labels.len(), "critical": critical, "csr": num(o.csr()),
        "iterations": o.iterations, "new_per_iteration": o.new_per_iteration, "lass": lass, "seconds": secs,
        "step": saved.checkpoint.state.step });
    let text = format!(
        "CSR {} ({critical} critical of {} validation examples; LASS r = {}/255, {} iterations, {secs:.1}s)",
        fmt_f64(o.csr()),
        valid.labels.len(),
        a.lass.lass_r,
        o.iterations
    );
    Ok(Report::new(text, j))
}
