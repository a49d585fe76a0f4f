"""Interop: canary log-perplexities computed with numpy from a model memaudit exported
(`memaudit export --format pytorch --with-canaries`) give the same exact, interpolated and
extrapolated exposures through the Python package as `memaudit exposure` gives on the run."""

import json
import math
import struct

import numpy as np

import memaudit

# Float32 model (memaudit) vs float64 numpy forward: the log-perplexities agree to 1e-4 bits
# (scripts/pytorch_interop.py's bound for the same comparison through PyTorch).
BITS_TOLERANCE = 1e-4


def load_safetensors(path):
    """The safetensors format: u64 header length, JSON header, raw little-endian tensors."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + a : 8 + n + b], dtype="<f4").reshape(meta["shape"]).astype(np.float64)
    return out


def lstm_log_softmax(w, layers, tokens):
    """nn.Embedding -> nn.LSTM (gate order i, f, g, o; zero state) -> nn.Linear, time-major
    tokens [T, B]; returns log-softmax [T, B, V] (step t predicts token t + 1)."""
    x = w["embedding.weight"][tokens]
    sig = lambda z: 1 / (1 + np.exp(-z))
    for k in range(layers):
        wih, whh = w[f"lstm.weight_ih_l{k}"], w[f"lstm.weight_hh_l{k}"]
        b = w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"]
        h = np.zeros((tokens.shape[1], whh.shape[1]))
        c = np.zeros_like(h)
        outs = []
        for t in range(tokens.shape[0]):
            i, f, g, o = np.split(x[t] @ wih.T + h @ whh.T + b, 4, axis=1)
            c = sig(f) * c + sig(i) * np.tanh(g)
            h = sig(o) * np.tanh(c)
            outs.append(h)
        x = np.stack(outs)
    logits = x @ w["output.weight"].T + w["output.bias"]
    m = logits.max(axis=-1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))


def log_perplexities(w, layers, scoring, sequences):
    """vocab.json's canary_scoring rule: feed context ++ prefix unscored, sum max(0, -log2 p)
    over the scored tokens."""
    context = scoring["context_token_ids"]
    n_prefix, n_scored = len(scoring["template"]["prefix_token_ids"]), len(scoring["template"]["scored"])
    tokens = np.array([context + list(s) for s in sequences]).T  # [T, B]
    logp = lstm_log_softmax(w, layers, tokens)
    start = len(context) + n_prefix
    bits = np.zeros(tokens.shape[1])
    for pos in range(start, start + n_scored):
        lp = logp[pos - 1, np.arange(tokens.shape[1]), tokens[pos]]
        bits += np.maximum(0.0, -lp / math.log(scoring["log_base"]))
    return bits


def test_exposure_from_numpy_scores_of_an_exported_model_matches_the_cli(cli, tmp_path):
    run, exp = tmp_path / "run", tmp_path / "export"
    cli("secret-sharer", "--corpus", "embedded", "--canary", "my pin is {digits:3}", "--canaries", "3",
        "--repetitions", "1,8", "--embed", "16", "--rnn-hidden", "32", "--rnn-layers", "2",
        "--max-train", "300", "--seq-len", "40", "--batch-size", "16", "--epochs", "2", "--seed", "11",
        "--references", "300", "--out", run)
    cli("export", "--run", run, "--format", "pytorch", "--out", exp, "--with-canaries")
    ours = cli("exposure", "--run", run)
    assert ours["exact"] is True

    w = load_safetensors(exp / "model.safetensors")
    config = json.loads((exp / "config.json").read_text())
    (lstm,) = [m for m in config["modules"] if m["type"] == "LSTM"]
    scoring = json.loads((exp / "vocab.json").read_text())["canary_scoring"]
    tpl = scoring["template"]
    prefix, slots = tpl["prefix_token_ids"], tpl["scored"]

    def tokens_of(digits):
        return prefix + [slots[i]["candidates"][int(d)] for i, d in enumerate(digits)]

    canaries = json.loads((exp / "canaries.json").read_text())["canaries"]
    # references.json: indices into R (decimal strings); index k of {digits:3} is the digits of k.
    references = [f"{int(k):03d}" for k in json.loads((exp / "references.json").read_text())]
    space = [f"{k:03d}" for k in range(1000)]  # all of R
    lp_space = log_perplexities(w, lstm["num_layers"], scoring, [tokens_of(s) for s in space])
    lp_refs = log_perplexities(w, lstm["num_layers"], scoring, [tokens_of(s) for s in references])
    secret_index = [c["secret_index"] for c in canaries]
    assert secret_index == [int(c["text"][-3:]) for c in canaries]
    lp_canaries = lp_space[secret_index]
    assert [c["token_ids"] for c in canaries] == [tokens_of(s) for s in (c["text"][-3:] for c in canaries)]

    by_id = {c["id"]: c for c in ours["canaries"]}
    cli_lp = np.array([by_id[c["id"]]["log_perplexity"] for c in canaries])
    assert np.max(np.abs(cli_lp - lp_canaries)) < BITS_TOLERANCE

    exact = memaudit.exact_exposure(lp_space, secret_index)
    interp = memaudit.interpolation_exposure(lp_canaries, lp_refs)
    extra = memaudit.extrapolation_exposure(lp_canaries, lp_refs)
    for i, c in enumerate(canaries):
        mine = by_id[c["id"]]
        # Ranks are counts: equal unless a candidate lies within the 1e-4-bit float32 noise of a
        # canary, which this seed's run does not have.
        assert exact["ranks"][i] == mine["rank"], c["id"]
        assert exact["exposures"][i] == mine["exposure"]
        assert interp[i] == mine["exposure_interpolated"]
        # The skew-normal fit (Nelder-Mead, scipy's xtol/ftol 1e-4) moves with 1e-5-bit input
        # noise by up to its own tolerance: 0.01 bits on the exposure.
        assert abs(extra["exposures"][i] - mine["exposure_extrapolated"]) < 0.01, (extra, mine)
    assert abs(extra["shape"] - ours["skew_normal"]["shape"]) < 1e-2
