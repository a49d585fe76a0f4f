//! The LSTM cell kernels (PyTorch's gate order `[i, f, g, o]`): training forward and backward
//! over blocks of rows, and the inference step.

#[allow(unused_imports)]
use super::*;

/// One row of the LSTM cell forward (training): pre-activations `[a_i, a_f, a_g, a_o]` (without
/// bias) become the activations `[i, f, g, o]`; `c = f c_prev + i g`, `h = o tanh(c)`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_forward_row(
    gi: &mut [f32],
    gf: &mut [f32],
    gg: &mut [f32],
    go: &mut [f32],
    bi: &[f32],
    bf: &[f32],
    bg: &[f32],
    bo: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    tanh_c: &mut [f32],
    h: &mut [f32],
) {
    let n = h.len();
    let (gi, gf, gg, go) = (&mut gi[..n], &mut gf[..n], &mut gg[..n], &mut go[..n]);
    let (bi, bf, bg, bo) = (&bi[..n], &bf[..n], &bg[..n], &bo[..n]);
    let (c_prev, c, tanh_c) = (&c_prev[..n], &mut c[..n], &mut tanh_c[..n]);
    for j in 0..n {
        let i = sigmoid(gi[j] + bi[j]);
        let f = sigmoid(gf[j] + bf[j]);
        let gv = tanh(gg[j] + bg[j]);
        let o = sigmoid(go[j] + bo[j]);
        let cn = f * c_prev[j] + i * gv;
        let t = tanh(cn);
        gi[j] = i;
        gf[j] = f;
        gg[j] = gv;
        go[j] = o;
        c[j] = cn;
        tanh_c[j] = t;
        h[j] = o * t;
    }
}

rnn_kernel! {
    /// LSTM cell forward over `n` contiguous rows (one time step of a block of examples).
    /// `gates` `[n, 4H]` holds `x W_ih^T + h_prev W_hh^T` and is overwritten by the activations
    /// `[i, f, g, o]`; `bias` (`4H`) is `b_ih + b_hh`; `c_prev` `[n, H]` (zeros at t = 0); writes
    /// `c`, `tanh(c)` and `h` (`[n, H]` each).
    #[allow(clippy::too_many_arguments)]
    pub fn lstm_forward_rows(
        gates: &mut [f32],
        bias: &[f32],
        c_prev: &[f32],
        c: &mut [f32],
        tanh_c: &mut [f32],
        h: &mut [f32],
        hidden: usize,
    ) {
        let hd = hidden;
        let (bi, bf, bg, bo) = split4r(bias, hd);
        for (r, (((g, cp), (cr, tr)), hr)) in gates
            .chunks_exact_mut(4 * hd)
            .zip(c_prev.chunks_exact(hd))
            .zip(c.chunks_exact_mut(hd).zip(tanh_c.chunks_exact_mut(hd)))
            .zip(h.chunks_exact_mut(hd))
            .enumerate()
        {
            let _ = r;
            let (gi, gf, gg, go) = split4(g, hd);
            lstm_forward_row(gi, gf, gg, go, bi, bf, bg, bo, cp, cr, tr, hr);
        }
    }
}

/// One row of the LSTM cell backward; see `lstm_backward_rows`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn lstm_backward_row(
    (ai, af, ag, ao): (&[f32], &[f32], &[f32], &[f32]),
    c_prev: &[f32],
    tanh_c: &[f32],
    dh: &[f32],
    dc: &mut [f32],
    dgi: &mut [f32],
    dgf: &mut [f32],
    dgg: &mut [f32],
    dgo: &mut [f32],
    si: &mut [f32],
    sf: &mut [f32],
    sg: &mut [f32],
    so: &mut [f32],
) {
    let n = dh.len();
    let (ai, af, ag, ao) = (&ai[..n], &af[..n], &ag[..n], &ao[..n]);
    let (c_prev, tanh_c, dc) = (&c_prev[..n], &tanh_c[..n], &mut dc[..n]);
    let (dgi, dgf, dgg, dgo) = (&mut dgi[..n], &mut dgf[..n], &mut dgg[..n], &mut dgo[..n]);
    let (si, sf, sg, so) = (&mut si[..n], &mut sf[..n], &mut sg[..n], &mut so[..n]);
    for j in 0..n {
        let (i, f, g, o, t) = (ai[j], af[j], ag[j], ao[j], tanh_c[j]);
        let d = dh[j];
        let dcv = dc[j] + d * o * (1.0 - t * t);
        let d_o = d * t * o * (1.0 - o);
        let d_i = dcv * g * i * (1.0 - i);
        let d_g = dcv * i * (1.0 - g * g);
        let d_f = dcv * c_prev[j] * f * (1.0 - f);
        dc[j] = dcv * f;
        dgi[j] = d_i;
        dgf[j] = d_f;
        dgg[j] = d_g;
        dgo[j] = d_o;
        si[j] += d_i;
        sf[j] += d_f;
        sg[j] += d_g;
        so[j] += d_o;
    }
}

rnn_kernel! {
    /// LSTM cell backward over `n` contiguous rows. Inputs: the activations `acts` `[n, 4H]`,
    /// `c_prev` and `tanh_c` `[n, H]`, and `dh` `[n, H]` (the full gradient w.r.t. this step's
    /// h). `dc` `[n, H]` carries the cell-state gradient: on entry `f_{t+1} dc_{t+1}` (zeros at
    /// the last step), on exit `f_t dc_t`. Writes the pre-activation gradients `dgates`
    /// `[n, 4H]` and adds them into `bias_sum` `[n, 4H]` (each example's bias gradient).
    #[allow(clippy::too_many_arguments)]
    pub fn lstm_backward_rows(
        acts: &[f32],
        c_prev: &[f32],
        tanh_c: &[f32],
        dh: &[f32],
        dc: &mut [f32],
        dgates: &mut [f32],
        bias_sum: &mut [f32],
        hidden: usize,
    ) {
        let hd = hidden;
        for ((((a, cp), (tc, d)), dcr), (dg, s)) in acts
            .chunks_exact(4 * hd)
            .zip(c_prev.chunks_exact(hd))
            .zip(tanh_c.chunks_exact(hd).zip(dh.chunks_exact(hd)))
            .zip(dc.chunks_exact_mut(hd))
            .zip(dgates.chunks_exact_mut(4 * hd).zip(bias_sum.chunks_exact_mut(4 * hd)))
        {
            let (dgi, dgf, dgg, dgo) = split4(dg, hd);
            let (si, sf, sg, so) = split4(s, hd);
            lstm_backward_row(split4r(a, hd), cp, tc, d, dcr, dgi, dgf, dgg, dgo, si, sf, sg, so);
        }
    }
}

/// One row of the incremental LSTM step: `c = f c + i g`, `h = o tanh(c)` in place.
#[inline(always)]
fn lstm_step_row((gi, gf, gg, go): (&[f32], &[f32], &[f32], &[f32]), h: &mut [f32], c: &mut [f32]) {
    let n = h.len();
    let (gi, gf, gg, go, c) = (&gi[..n], &gf[..n], &gg[..n], &go[..n], &mut c[..n]);
    for j in 0..n {
        let i = sigmoid(gi[j]);
        let f = sigmoid(gf[j]);
        let gv = tanh(gg[j]);
        let o = sigmoid(go[j]);
        let cn = f * c[j] + i * gv;
        c[j] = cn;
        h[j] = o * tanh(cn);
    }
}

rnn_kernel! {
    /// Incremental LSTM step over `n` rows of a state matrix (row stride `width`), in place:
    /// `pre` `[n, 4H]` holds the full pre-activations (biases included); the row's `h` lives at
    /// `h_off..h_off + H` and `c` at `c_off..c_off + H` (`h_off + H <= c_off`).
    pub fn lstm_step_rows(
        pre: &[f32],
        state: &mut [f32],
        width: usize,
        h_off: usize,
        c_off: usize,
        hidden: usize,
    ) {
        let hd = hidden;
        for (g, row) in pre.chunks_exact(4 * hd).zip(state.chunks_exact_mut(width)) {
            let (lo, hi) = row.split_at_mut(c_off);
            lstm_step_row(split4r(g, hd), &mut lo[h_off..h_off + hd], &mut hi[..hd]);
        }
    }
}
