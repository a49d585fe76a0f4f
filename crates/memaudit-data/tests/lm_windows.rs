//! The LM example convention other crates rely on: window k = tokens[k*W .. k*W + W + 1],
//! stride W, trailing partial window dropped, batches time-major.

use memaudit_data::lm::{LmWindows, split_contiguous};

fn stream(n: u32) -> Vec<u32> {
    (100..100 + n).collect()
}

#[test]
fn windows_follow_the_convention() {
    // 11 tokens, W = 3: windows [0..4], [3..7], [6..10]; token 10 is the dropped tail.
    let w = LmWindows::new(stream(11), 3).unwrap();
    assert_eq!(w.len(), 3);
    assert_eq!(w.window(0).unwrap(), &[100, 101, 102, 103]);
    assert_eq!(w.window(1).unwrap(), &[103, 104, 105, 106]);
    assert_eq!(w.window(2).unwrap(), &[106, 107, 108, 109]);
    assert!(w.window(3).is_none());
    // Exactly W + 1 tokens give one window; 2W tokens still one; 2W + 1 give two.
    assert_eq!(LmWindows::new(stream(4), 3).unwrap().len(), 1);
    assert_eq!(LmWindows::new(stream(6), 3).unwrap().len(), 1);
    assert_eq!(LmWindows::new(stream(7), 3).unwrap().len(), 2);
}

#[test]
fn too_short_streams_and_zero_windows_are_errors() {
    assert!(LmWindows::new(stream(3), 3).is_err());
    assert!(LmWindows::new(stream(10), 0).is_err());
    assert!(LmWindows::new(Vec::new(), 1).is_err());
}

#[test]
fn gather_is_time_major() {
    let w = LmWindows::new(stream(11), 3).unwrap();
    let b = w.gather(&[2, 0]).unwrap();
    assert_eq!((b.seq_len, b.batch), (3, 2));
    // [t][b] at t*batch + b: column 0 is window 2 (106..), column 1 is window 0 (100..).
    assert_eq!(b.inputs, vec![106, 100, 107, 101, 108, 102]);
    assert_eq!(b.targets, vec![107, 101, 108, 102, 109, 103]);
    for t in 0..3 {
        assert_eq!(b.input(t, 0), 106 + t as u32);
        assert_eq!(b.target(t, 1), 101 + t as u32);
    }
}

#[test]
fn gather_allows_empty_and_repeated_batches_and_rejects_bad_indices() {
    let w = LmWindows::new(stream(11), 3).unwrap();
    let empty = w.gather(&[]).unwrap();
    assert_eq!((empty.seq_len, empty.batch), (3, 0));
    assert!(empty.inputs.is_empty() && empty.targets.is_empty());
    let rep = w.gather(&[1, 1]).unwrap();
    assert_eq!(rep.inputs, vec![103, 103, 104, 104, 105, 105]);
    let err = w.gather(&[0, 3]).unwrap_err().to_string();
    assert!(
        err.contains("index 3") && err.contains("3 windows"),
        "{err}"
    );
}

#[test]
fn windows_touching_matches_brute_force() {
    for len in [4usize, 7, 11, 20] {
        for win in 1..5 {
            let Ok(w) = LmWindows::new(stream(len as u32), win) else {
                continue;
            };
            for s in 0..len + 2 {
                for e in s..len + 3 {
                    let expected: Vec<usize> = (0..w.len())
                        .filter(|&k| {
                            let sp = w.window_span(k);
                            s < e && sp.start < e && s < sp.end
                        })
                        .collect();
                    let got: Vec<usize> = w.windows_touching(s..e).collect();
                    assert_eq!(got, expected, "len {len} W {win} span {s}..{e}");
                }
            }
        }
    }
}

#[test]
fn contiguous_split() {
    let t = stream(10);
    let (a, b) = split_contiguous(&t, 0.2).unwrap();
    assert_eq!(a, stream(8));
    assert_eq!(b, vec![108, 109]);
    let (a, b) = split_contiguous(&t, 0.0).unwrap();
    assert_eq!((a.len(), b.len()), (10, 0));
    assert!(split_contiguous(&t, 1.0).is_err());
    assert!(split_contiguous(&t, -0.1).is_err());
    assert!(split_contiguous(&t, f64::NAN).is_err());
}
