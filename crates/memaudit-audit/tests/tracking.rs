use memaudit_audit::{ExposureLog, ExposureRecord, histogram};

#[test]
fn exposure_log_csv_roundtrip_and_means() {
    let mut log = ExposureLog::default();
    for epoch in 0..3 {
        for (i, reps) in [(0, 1u32), (1, 1), (2, 4)] {
            log.push(ExposureRecord {
                epoch,
                step: 100 * epoch as u64,
                canary_id: format!("r{reps}-{i}"),
                repetitions: reps,
                log_perplexity: 20.0 - epoch as f64 - i as f64,
                rank: if i == 0 { Some(10 + i as u64) } else { None },
                exposure_exact: if i == 0 { Some(epoch as f64) } else { None },
                exposure_interpolated: Some(1.5 * epoch as f64 + i as f64),
                exposure_extrapolated: Some(2.0),
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("exposure.csv");
    log.write_csv(&csv).unwrap();
    assert_eq!(ExposureLog::read_csv(&csv).unwrap(), log);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.starts_with("epoch,step,canary_id,repetitions,log_perplexity,rank,exposure_exact")
    );
    log.write_json(&dir.path().join("exposure.json")).unwrap();
    let means = log.mean_by_epoch(1, |r| r.exposure_interpolated);
    assert_eq!(means, vec![(0, 0.5), (1, 2.0), (2, 3.5)]);
}

#[test]
fn histogram_counts_everything_finite() {
    let h = histogram(&[0.0, 1.0, 2.0, 3.0, 4.0, f64::NAN, f64::INFINITY], 4);
    assert_eq!(h.counts, vec![1, 1, 1, 2]);
    assert_eq!(h.edges, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
}
