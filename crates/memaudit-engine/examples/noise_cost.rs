//! How long DP noise takes for a parameter vector of a given size (for tuning NoiseSource).
use std::time::Instant;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(203_530);
    let mut src = memaudit_engine::dp::NoiseSource::from_os();
    let mut x = vec![0.0f32; n];
    let mut times = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        src.add_gaussian(&mut x, 1.1);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{n} normals: median {:.3} ms, min {:.3} ms ({:.2} ns/sample at median)",
        times[25],
        times[0],
        times[25] * 1e6 / n as f64
    );
}
