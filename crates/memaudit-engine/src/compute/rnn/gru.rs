//! The GRU cell kernels (PyTorch's formulation, `[r, z, n]` with `b_hn` inside
//! `r * (W_hn h + b_hn)`): training forward and backward over blocks of rows, and the inference
//! step.

#[allow(unused_imports)]
use super::*;

/// One row of the GRU forward; see `gru_forward_rows`.
#[inline(always)]
fn gru_forward_row(
    (xr, xz, xn): (&mut [f32], &mut [f32], &mut [f32]),
    (hr, hz, hn): (&[f32], &[f32], &[f32]),
    h_prev: &[f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (xr, xz, xn) = (&mut xr[..n], &mut xz[..n], &mut xn[..n]);
    let (hr, hz, hn, h_prev) = (&hr[..n], &hz[..n], &hn[..n], &h_prev[..n]);
    for j in 0..n {
        let rv = sigmoid(xr[j] + hr[j]);
        let zv = sigmoid(xz[j] + hz[j]);
        let nv = tanh(xn[j] + rv * hn[j]);
        xr[j] = rv;
        xz[j] = zv;
        xn[j] = nv;
        h[j] = nv + zv * (h_prev[j] - nv);
    }
}

rnn_kernel! {
    /// GRU cell forward over `n` contiguous rows. `gx` `[n, 3H]` holds `x W_ih^T + b_ih` and is
    /// overwritten by the activations `[r, z, n]`; `gh` `[n, 3H]` holds `h_prev W_hh^T + b_hh`
    /// (kept: backward needs its n block); `h_prev` `[n, H]` (zeros at t = 0); writes
    /// `h = (1 - z) n + z h_prev` into `h`.
    pub fn gru_forward_rows(
        gx: &mut [f32],
        gh: &[f32],
        h_prev: &[f32],
        h: &mut [f32],
        hidden: usize,
    ) {
        let hd = hidden;
        for ((x, g), (hp, ho)) in gx
            .chunks_exact_mut(3 * hd)
            .zip(gh.chunks_exact(3 * hd))
            .zip(h_prev.chunks_exact(hd).zip(h.chunks_exact_mut(hd)))
        {
            gru_forward_row(split3(x, hd), split3r(g, hd), hp, ho);
        }
    }
}

/// One row of the GRU backward; see `gru_backward_rows`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gru_backward_row(
    (ar, az, an): (&[f32], &[f32], &[f32]),
    ghn: &[f32],
    h_prev: &[f32],
    dh: &[f32],
    dh_prev: &mut [f32],
    (xr, xz, xn): (&mut [f32], &mut [f32], &mut [f32]),
    (hr, hz, hn): (&mut [f32], &mut [f32], &mut [f32]),
    (sxr, sxz, sxn): (&mut [f32], &mut [f32], &mut [f32]),
    (shr, shz, shn): (&mut [f32], &mut [f32], &mut [f32]),
) {
    let n = dh.len();
    let (ar, az, an, ghn, h_prev) = (&ar[..n], &az[..n], &an[..n], &ghn[..n], &h_prev[..n]);
    let dh_prev = &mut dh_prev[..n];
    let (xr, xz, xn, hr, hz, hn) = (
        &mut xr[..n],
        &mut xz[..n],
        &mut xn[..n],
        &mut hr[..n],
        &mut hz[..n],
        &mut hn[..n],
    );
    let (sxr, sxz, sxn, shr, shz, shn) = (
        &mut sxr[..n],
        &mut sxz[..n],
        &mut sxn[..n],
        &mut shr[..n],
        &mut shz[..n],
        &mut shn[..n],
    );
    for j in 0..n {
        let (rv, zv, nv) = (ar[j], az[j], an[j]);
        let d = dh[j];
        let dz = d * (h_prev[j] - nv) * zv * (1.0 - zv);
        let dn = d * (1.0 - zv) * (1.0 - nv * nv);
        let dr = dn * ghn[j] * rv * (1.0 - rv);
        let dnh = dn * rv;
        dh_prev[j] += d * zv;
        xr[j] = dr;
        xz[j] = dz;
        xn[j] = dn;
        hr[j] = dr;
        hz[j] = dz;
        hn[j] = dnh;
        sxr[j] += dr;
        sxz[j] += dz;
        sxn[j] += dn;
        shr[j] += dr;
        shz[j] += dz;
        shn[j] += dnh;
    }
}

rnn_kernel! {
    /// GRU cell backward over `n` contiguous rows. Inputs: activations `acts` `[n, 3H]`
    /// (`[r, z, n]`), `gh` `[n, 3H]` (its n block is `W_hn h_prev + b_hn`), `h_prev` and the full
    /// gradient `dh` w.r.t. this step's h (`[n, H]`). Adds the direct path `z dh` into `dh_prev`
    /// (`[n, H]`); writes the pre-activation gradients seen by W_ih (`dgx = [dr, dz, dn]`) and by
    /// W_hh (`dgh = [dr, dz, r dn]`), and adds them into `sum_x` / `sum_h` (per-example biases).
    #[allow(clippy::too_many_arguments)]
    pub fn gru_backward_rows(
        acts: &[f32],
        gh: &[f32],
        h_prev: &[f32],
        dh: &[f32],
        dh_prev: &mut [f32],
        dgx: &mut [f32],
        dgh: &mut [f32],
        sum_x: &mut [f32],
        sum_h: &mut [f32],
        hidden: usize,
    ) {
        let hd = hidden;
        for ((((a, g), (hp, d)), dhp), ((dx, dhh), (sx, sh))) in acts
            .chunks_exact(3 * hd)
            .zip(gh.chunks_exact(3 * hd))
            .zip(h_prev.chunks_exact(hd).zip(dh.chunks_exact(hd)))
            .zip(dh_prev.chunks_exact_mut(hd))
            .zip(
                dgx.chunks_exact_mut(3 * hd)
                    .zip(dgh.chunks_exact_mut(3 * hd))
                    .zip(sum_x.chunks_exact_mut(3 * hd).zip(sum_h.chunks_exact_mut(3 * hd))),
            )
        {
            gru_backward_row(
                split3r(a, hd),
                &g[2 * hd..3 * hd],
                hp,
                d,
                dhp,
                split3(dx, hd),
                split3(dhh, hd),
                split3(sx, hd),
                split3(sh, hd),
            );
        }
    }
}

/// One row of the incremental GRU step, `h` in place.
#[inline(always)]
fn gru_step_row(
    (xr, xz, xn): (&[f32], &[f32], &[f32]),
    (hr, hz, hn): (&[f32], &[f32], &[f32]),
    h: &mut [f32],
) {
    let n = h.len();
    let (xr, xz, xn, hr, hz, hn) = (&xr[..n], &xz[..n], &xn[..n], &hr[..n], &hz[..n], &hn[..n]);
    for j in 0..n {
        let rv = sigmoid(xr[j] + hr[j]);
        let zv = sigmoid(xz[j] + hz[j]);
        let nv = tanh(xn[j] + rv * hn[j]);
        h[j] = nv + zv * (h[j] - nv);
    }
}

rnn_kernel! {
    /// Incremental GRU step over `n` rows of a state matrix (row stride `width`), in place:
    /// `gx` and `gh` (`[n, 3H]`, biases included) as in `gru_forward_rows`; the row's `h` lives
    /// at `h_off..h_off + H`.
    pub fn gru_step_rows(
        gx: &[f32],
        gh: &[f32],
        state: &mut [f32],
        width: usize,
        h_off: usize,
        hidden: usize,
    ) {
        let hd = hidden;
        for ((x, g), row) in gx
            .chunks_exact(3 * hd)
            .zip(gh.chunks_exact(3 * hd))
            .zip(state.chunks_exact_mut(width))
        {
            gru_step_row(split3r(x, hd), split3r(g, hd), &mut row[h_off..h_off + hd]);
        }
    }
}
