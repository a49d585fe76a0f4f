//! Template parsing, the randomness space and seeded draws.

use memaudit_audit::{AuditError, CanaryTemplate, CharTokenizer, TemplateError, TokenizedTemplate};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn parses_the_issue_templates() {
    let t = CanaryTemplate::parse("the random number is {digits:9}").unwrap();
    assert_eq!(t.space().size(), 1_000_000_000);
    assert!((t.space().log2_size() - 29.897352853986263).abs() < 1e-12);
    assert_eq!(
        t.render(281_265_017).unwrap(),
        "the random number is 281265017"
    );

    let t = CanaryTemplate::parse("my pin is {digits:4}").unwrap();
    assert_eq!(t.space().size(), 10_000);
    assert_eq!(t.render(42).unwrap(), "my pin is 0042");

    let t = CanaryTemplate::parse("{letters:5}").unwrap();
    assert_eq!(t.space().size(), 26u128.pow(5));
    assert_eq!(t.render(0).unwrap(), "aaaaa");
    assert_eq!(t.render(26u128.pow(5) - 1).unwrap(), "zzzzz");

    let t = CanaryTemplate::parse("{alphabet=ABCDEFGHIJ:5}").unwrap();
    assert_eq!(t.space().size(), 100_000);
    assert_eq!(t.render(12345).unwrap(), "BCDEF");

    // literal braces, several slots, a colon inside an alphabet
    let t = CanaryTemplate::parse("{{id}} {digits:2}-{alphabet=:;:1}!").unwrap();
    assert_eq!(t.space().size(), 200);
    assert_eq!(t.render(2 * 7 + 1).unwrap(), "{id} 07-;!");
}

#[test]
fn template_errors_name_the_problem() {
    let no_slot = CanaryTemplate::parse("no slot here").unwrap_err();
    assert!(matches!(no_slot, TemplateError::NoSlot { .. }));
    assert!(no_slot.to_string().contains("{digits:9}"));

    let unknown = CanaryTemplate::parse("x {hex:4}").unwrap_err();
    assert!(
        matches!(unknown, TemplateError::UnknownSlotType { column: 4, ref kind, .. } if kind == "hex"),
        "{unknown:?}"
    );

    for (bad, column) in [
        ("x {digits:4", 3),      // unclosed
        ("x }", 3),              // stray close
        ("x {digits}", 4),       // no count
        ("x {digits:0}", 11),    // zero count
        ("x {digits:k}", 11),    // not a number
        ("{alphabet=A:3}", 2),   // one symbol
        ("{alphabet=ABA:3}", 2), // repeated symbol
        ("{dig{its:3}", 5),      // nested brace
    ] {
        match CanaryTemplate::parse(bad) {
            Err(TemplateError::Malformed { column: c, .. }) => assert_eq!(c, column, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!(matches!(
        CanaryTemplate::parse("{letters:28}"),
        Err(TemplateError::SpaceTooLarge { .. })
    ));
}

#[test]
fn seeded_distinct_draws() {
    let t = CanaryTemplate::parse("{digits:3}").unwrap();
    let s = t.space();
    let a = s
        .sample_distinct(100, &[], &mut ChaCha8Rng::seed_from_u64(7))
        .unwrap();
    let b = s
        .sample_distinct(100, &[], &mut ChaCha8Rng::seed_from_u64(7))
        .unwrap();
    assert_eq!(a, b, "same seed, same draw");
    let mut sorted = a.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 100);
    // dense request: everything but the excluded, each once
    let refs = s
        .sample_distinct(900, &a, &mut ChaCha8Rng::seed_from_u64(8))
        .unwrap();
    let mut all: Vec<u128> = refs.iter().chain(&a).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert!(matches!(
        s.sample_distinct(901, &a, &mut ChaCha8Rng::seed_from_u64(8)),
        Err(AuditError::NotEnoughCandidates { .. })
    ));
    // sparse draws are uniform: chi-square over 10 buckets of a 10^6 space, 20,000 draws
    let big = CanaryTemplate::parse("{digits:6}").unwrap();
    let draws = big
        .space()
        .sample_distinct(20_000, &[], &mut ChaCha8Rng::seed_from_u64(9))
        .unwrap();
    let mut buckets = [0f64; 10];
    draws
        .iter()
        .for_each(|&d| buckets[(d / 100_000) as usize] += 1.0);
    let chi2: f64 = buckets.iter().map(|&o| (o - 2000.0).powi(2) / 2000.0).sum();
    assert!(chi2 < 27.9, "chi2 {chi2} (9 dof, p = 0.001)");
}

#[test]
fn tokenization_and_its_errors() {
    let vocab: Vec<char> = "\n abcdefghijklmnopqrstuvwxyz0123456789.-"
        .chars()
        .collect();
    let tok = CharTokenizer::new(&vocab);
    let t = CanaryTemplate::parse("pin {digits:2}-{digits:1}.").unwrap();
    let tt = TokenizedTemplate::new(&t, &tok, &[0]).unwrap();
    assert_eq!(tt.prefix().len(), 4);
    assert_eq!(
        tt.steps().len(),
        4,
        "two digits, the literal '-', one digit"
    );
    assert_eq!(tt.steps()[2].slot_position, None);
    assert_eq!(
        tt.suffix(),
        &[vocab.iter().position(|&c| c == '.').unwrap() as u32]
    );
    let toks = tt.canary_tokens(230).unwrap(); // symbols 2, 3, 0
    let text: String = toks.iter().map(|&t| vocab[t as usize]).collect();
    assert_eq!(text, "pin 23-0.");
    assert_eq!(text, t.render(230).unwrap());

    // a symbol outside the character vocabulary
    let t = CanaryTemplate::parse("{alphabet=AB:2}").unwrap();
    let err = TokenizedTemplate::new(&t, &tok, &[0]).unwrap_err();
    assert!(
        err.to_string().contains("'A'") && err.to_string().contains("vocabulary"),
        "{err}"
    );
    // nothing to condition on
    let t = CanaryTemplate::parse("{digits:2}").unwrap();
    assert!(matches!(
        TokenizedTemplate::new(&t, &tok, &[]),
        Err(AuditError::EmptyContext)
    ));
}
