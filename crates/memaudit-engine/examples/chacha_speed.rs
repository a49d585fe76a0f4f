use rand::{RngCore, SeedableRng};
use std::time::Instant;
fn bench<R: RngCore>(name: &str, mut r: R) {
    let mut buf = vec![0u8; 8 << 20];
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let t = Instant::now();
        r.fill_bytes(&mut buf);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{name}: {:.2} GB/s ({:.2} ns per 8 bytes)",
        buf.len() as f64 / best / 1e9,
        best * 1e9 / (buf.len() / 8) as f64
    );
}
/// AES-128-CTR keystream (what `NoiseSource` uses for bulk noise).
fn bench_aes() {
    use ctr::cipher::{KeyIvInit, StreamCipher};
    let mut buf = vec![0u8; 8 << 20];
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let mut c = ctr::Ctr128BE::<aes::Aes128>::new(&[7u8; 16].into(), &[0u8; 16].into());
        let t = Instant::now();
        c.apply_keystream(&mut buf);
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "aes128-ctr: {:.2} GB/s ({:.2} ns per 8 bytes)",
        buf.len() as f64 / best / 1e9,
        best * 1e9 / (buf.len() / 8) as f64
    );
}
fn main() {
    bench_aes();
    bench("chacha20", rand_chacha::ChaCha20Rng::seed_from_u64(1));
    bench("chacha12", rand_chacha::ChaCha12Rng::seed_from_u64(1));
    bench("chacha8", rand_chacha::ChaCha8Rng::seed_from_u64(1));
}
