//! FFT convolutions for the PLD accountant (realfft over rustfft).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Forward and inverse plans of length n. Plans (twiddle tables: one sin/cos per point) are cached
/// for the process, like SciPy's pocketfft plan cache.
fn plans(n: usize) -> (Arc<dyn RealToComplex<f64>>, Arc<dyn ComplexToReal<f64>>) {
    static PLANNER: OnceLock<Mutex<RealFftPlanner<f64>>> = OnceLock::new();
    let mut planner = PLANNER
        .get_or_init(|| Mutex::new(RealFftPlanner::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    (planner.plan_fft_forward(n), planner.plan_fft_inverse(n))
}

/// The smallest even 7-smooth integer >= n (rustfft is fastest on 2^a 3^b 5^c 7^d; realfft
/// halves an even length).
pub fn fast_len(n: usize) -> usize {
    let n = n.max(2);
    let mut best = n.next_power_of_two();
    let mut p7 = 1usize;
    while p7 < 2 * n {
        let mut p5 = p7;
        while p5 < 2 * n {
            let mut p3 = p5;
            while p3 < 2 * n {
                let mut p = p3;
                while p < n || p % 2 == 1 {
                    p *= 2;
                }
                best = best.min(p);
                p3 *= 3;
            }
            p5 *= 5;
        }
        p7 *= 7;
    }
    best
}

/// z^n for a complex z, in polar form (the relative error grows like n times the rounding of z,
/// as for any method: dp_accounting raises its spectrum to the power the same way).
#[inline]
fn complex_powu(z: Complex<f64>, n: u64) -> Complex<f64> {
    let r2 = z.re * z.re + z.im * z.im;
    if r2 == 0.0 {
        return Complex::new(0.0, 0.0);
    }
    let nf = n as f64;
    let mag = (0.5 * nf * r2.ln()).exp();
    if mag == 0.0 {
        return Complex::new(0.0, 0.0);
    }
    let (s, c) = (nf * z.im.atan2(z.re)).sin_cos();
    Complex::new(mag * c, mag * s)
}

/// Raises every bin to the power n. Bins with |z|^n below 1e-320 (exactly 0 in the output after
/// the inverse transform's rounding) are set to 0 without transcendental calls: most bins of a
/// many-fold composition are such, which makes this loop cheap.
fn spectrum_powu(spectrum: &mut [Complex<f64>], n: u64) {
    let r2_min = (-1480.0 / n as f64).exp(); // |z|^2 below this: |z|^n < e^-740
    for z in spectrum.iter_mut() {
        let r2 = z.re * z.re + z.im * z.im;
        *z = if r2 < r2_min {
            Complex::new(0.0, 0.0)
        } else {
            complex_powu(*z, n)
        };
    }
}

/// The `count`-fold self-convolution of `input`, circular over a fast length covering
/// `output_len` (dp_accounting `common.self_convolve`): returns entries
/// `lower_bound .. lower_bound + output_len` of the full convolution (mass outside that window
/// wraps around; the caller bounds it by a Chernoff bound).
pub fn self_convolve(input: &[f64], count: u64, lower_bound: usize, output_len: usize) -> Vec<f64> {
    let n = fast_len(output_len.max(input.len()));
    let (forward, inverse) = plans(n);
    with_scratch(|scratch| {
        let Scratch {
            real: buf,
            spectrum,
            work,
        } = scratch;
        buf.clear();
        buf.resize(n, 0.0);
        buf[..input.len()].copy_from_slice(input);
        spectrum.clear();
        spectrum.resize(n / 2 + 1, Complex::new(0.0, 0.0));
        let work_len = forward.get_scratch_len().max(inverse.get_scratch_len());
        work.clear();
        work.resize(work_len, Complex::new(0.0, 0.0));
        forward
            .process_with_scratch(buf, spectrum, work)
            .expect("buffer sizes come from the plan");
        spectrum_powu(spectrum, count);
        // The DC and Nyquist bins of a real signal are real; rounding in the power leaves ~1e-16
        // imaginary parts that realfft would reject.
        spectrum[0].im = 0.0;
        if let Some(last) = spectrum.last_mut() {
            last.im = 0.0;
        }
        inverse
            .process_with_scratch(spectrum, buf, work)
            .expect("buffer sizes come from the plan");
        // Entries lower_bound.. of the circular result, wrapping at n (output_len <= n).
        let scale = 1.0 / n as f64;
        let start = lower_bound % n;
        let head = (n - start).min(output_len);
        let mut out = Vec::with_capacity(output_len);
        out.extend(buf[start..start + head].iter().map(|v| v * scale));
        out.extend(buf[..output_len - head].iter().map(|v| v * scale));
        out
    })
}

/// Per-thread FFT buffers, reused between calls: allocating and page-faulting fresh megabytes
/// for every composition cost about a third of the time of a PLD epsilon.
#[derive(Default)]
struct Scratch {
    real: Vec<f64>,
    spectrum: Vec<Complex<f64>>,
    work: Vec<Complex<f64>>,
}

/// Buffers larger than this (in elements) are not kept after use.
const MAX_CACHED_LEN: usize = 1 << 22;

fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
    }
    SCRATCH.with(|cell| {
        // Taken out of the cell so that a nested call (none today) would get fresh buffers.
        let mut scratch = cell.take();
        let out = f(&mut scratch);
        if scratch.real.capacity() <= MAX_CACHED_LEN {
            cell.replace(scratch);
        }
        out
    })
}

/// Linear convolution of a and b (direct for short inputs, FFT otherwise).
pub fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let out_len = a.len() + b.len() - 1;
    if a.len().min(b.len()) <= 64 {
        let mut out = vec![0.0; out_len];
        let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
        for (i, s) in short.iter().enumerate() {
            if *s == 0.0 {
                continue;
            }
            for (o, l) in out[i..i + long.len()].iter_mut().zip(long) {
                *o += s * l;
            }
        }
        return out;
    }
    let n = fast_len(out_len);
    let (forward, inverse) = plans(n);
    let mut buf_a = forward.make_input_vec();
    buf_a[..a.len()].copy_from_slice(a);
    let mut buf_b = forward.make_input_vec();
    buf_b[..b.len()].copy_from_slice(b);
    let mut spec_a = forward.make_output_vec();
    let mut spec_b = forward.make_output_vec();
    forward
        .process(&mut buf_a, &mut spec_a)
        .expect("buffer sizes come from the plan");
    forward
        .process(&mut buf_b, &mut spec_b)
        .expect("buffer sizes come from the plan");
    for (x, y) in spec_a.iter_mut().zip(&spec_b) {
        *x *= *y;
    }
    spec_a[0].im = 0.0;
    if let Some(last) = spec_a.last_mut() {
        last.im = 0.0;
    }
    inverse
        .process(&mut spec_a, &mut buf_a)
        .expect("buffer sizes come from the plan");
    let scale = 1.0 / n as f64;
    buf_a[..out_len].iter().map(|v| v * scale).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lengths_are_even_and_smooth() {
        for n in [1usize, 2, 3, 11, 97, 1000, 38420, 152517, 7_307_588] {
            let m = fast_len(n);
            assert!(m >= n && m.is_multiple_of(2), "{n} -> {m}");
            let mut r = m;
            for p in [2, 3, 5, 7] {
                while r.is_multiple_of(p) {
                    r /= p;
                }
            }
            assert_eq!(r, 1, "{m} is not 7-smooth");
            assert!((m as f64) < 1.1 * n as f64 + 10.0, "{n} -> {m} too far");
        }
    }

    #[test]
    fn self_convolution_matches_direct() {
        let p = [0.2, 0.5, 0.3];
        let mut direct = vec![1.0];
        for _ in 0..5 {
            direct = convolve(&direct, &p);
        }
        let fft = self_convolve(&p, 5, 0, direct.len());
        for (a, b) in direct.iter().zip(&fft) {
            assert!((a - b).abs() < 1e-15, "{a} {b}");
        }
        // A window starting at 3 and shorter than the convolution: the mass outside it wraps
        // around modulo the FFT length (dp_accounting's design; the caller bounds that mass).
        let (start, len) = (3usize, 4usize);
        let n = fast_len(len.max(p.len()));
        let w = self_convolve(&p, 5, start, len);
        for (k, got) in w.iter().enumerate() {
            let aliased: f64 = direct
                .iter()
                .enumerate()
                .filter(|(m, _)| m % n == (k + start) % n)
                .map(|(_, v)| v)
                .sum();
            assert!((got - aliased).abs() < 1e-15, "{k}: {got} vs {aliased}");
        }
    }

    #[test]
    fn fft_convolution_matches_direct() {
        let a: Vec<f64> = (0..300).map(|i| ((i * 37 % 101) as f64) / 101.0).collect();
        let b: Vec<f64> = (0..200).map(|i| ((i * 53 % 89) as f64) / 89.0).collect();
        let fast = convolve(&a, &b);
        let mut direct = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                direct[i + j] += x * y;
            }
        }
        for (x, y) in fast.iter().zip(&direct) {
            assert!((x - y).abs() < 1e-10, "{x} {y}");
        }
    }
}
