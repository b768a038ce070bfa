//! `idem calibrate` end to end, and the feedback round trip into it.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use idem::proto::{self, Verdict};
use serde_json::Value;

fn calibrate(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_idem"))
        .arg("calibrate")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn small() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/calibrate_small.jsonl")
        .display()
        .to_string()
}

/// `idem calibrate --json` on the small pair file without an embedder (key, exact and fuzzy:
/// deterministic), recommending for the false-duplicate rate `target`.
fn small_without_embedder(target: &str) -> (bool, serde_json::Value, String) {
    calibrate(&[
        "--pairs",
        &small(),
        "--embedder",
        "none",
        "--json",
        "--target-false-dup-rate",
        target,
    ])
}

#[test]
fn small_pair_file_gives_the_expected_confusion_counts() {
    // Without an embedder the funnel is key, exact and fuzzy: deterministic.
    let (ok, r, err) = small_without_embedder("0.6");
    assert!(ok, "{err}");
    let c = &r["confusion"];
    // 5 of 6 duplicates caught (the reworded one needs the semantic stage); no distinct pair merged.
    assert_eq!(
        (
            c["tp"].as_u64(),
            c["fn"].as_u64(),
            c["fp"].as_u64(),
            c["tn"].as_u64()
        ),
        (Some(5), Some(1), Some(0), Some(4)),
        "{r}"
    );
    assert_eq!(r["pairs"], 10);
    assert_eq!(r["false_duplicate_rate"], 0.0);
    assert_eq!(r["per_group"]["format"]["recall"], 1.0);
    assert_eq!(r["per_group"]["identity"]["tn"], 2);
    assert!(r["sweep"].as_array().is_some_and(|s| !s.is_empty()));
    assert!(
        r["config_snippet"]
            .as_str()
            .is_some_and(|s| s.contains("fuzzy_threshold"))
    );
}

/// With the local embedder every prose pair without a hard conflict is embedded and judged:
/// the calibrator's own thresholds must not let the engine's pre-embedding filter skip them
/// (a borderline threshold of 1 once did, and the semantic stage reported no score at all).
#[test]
fn with_the_embedder_every_prose_pair_gets_a_judge_score() {
    let dir = tempfile::tempdir().unwrap();
    let scores = dir.path().join("scores.jsonl");
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let (ok, r, err) = calibrate(&[
        "--pairs",
        &small(),
        "--models-dir",
        &models.display().to_string(),
        "--json",
        "--scores-out",
        &scores.display().to_string(),
    ]);
    assert!(ok, "{err}");
    let lines: Vec<Value> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reworded = lines
        .iter()
        .find(|l| l["id"] == "dup-reworded")
        .expect("the reworded pair is scored");
    let p = reworded["semantic"].as_f64();
    assert!(p.is_some_and(|p| p > 0.0), "{reworded}");
    assert!(reworded["cosine"].as_f64().is_some(), "{reworded}");
    // The sweep reaches it: at the lowest judge threshold it is a duplicate.
    assert!(
        r["sweep"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x["recall"] == 1.0)),
        "{r}"
    );
}

#[test]
fn malformed_lines_are_reported_and_strict_makes_them_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pairs.jsonl");
    let good = std::fs::read_to_string(small()).unwrap();
    let first = good.lines().next().unwrap();
    std::fs::write(&path, format!("{first}\nnot json\n{{\"a\": 1}}\n{first}\n")).unwrap();
    let p = path.display().to_string();
    let (ok, r, err) = calibrate(&["--pairs", &p, "--embedder", "none", "--json"]);
    assert!(ok, "{err}");
    assert!(err.contains(":2:") && err.contains(":3:"), "{err}");
    let lines: Vec<u64> = r["malformed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![2, 3]);
    assert_eq!(r["pairs"], 2);
    let (ok, _, err) = calibrate(&["--pairs", &p, "--embedder", "none", "--json", "--strict"]);
    assert!(!ok);
    assert!(err.contains("malformed"), "{err}");
}

#[test]
fn the_recommendation_respects_the_target_on_its_data() {
    // Four distinct pairs cannot show a 10% rate with 95% confidence: no recommendation.
    let (ok, r, err) = small_without_embedder("0.1");
    assert!(ok, "{err}");
    assert!(r["recommended"].is_null(), "{}", r["recommended"]);
    for target in ["0.6", "0.9"] {
        let (ok, r, err) = small_without_embedder(target);
        assert!(ok, "{err}");
        let rec = &r["recommended"];
        let t: f64 = target.parse().unwrap();
        assert!(
            rec["false_duplicate_rate"].as_f64().unwrap() <= t + 1e-12,
            "{rec}"
        );
        // The recommended point is one of the sweep's, with the same figures.
        let found = r["sweep"].as_array().unwrap().iter().any(|p| {
            p["fuzzy_threshold"] == rec["fuzzy_threshold"]
                && p["semantic_duplicate"] == rec["semantic_duplicate"]
                && p["recall"] == rec["recall"]
        });
        assert!(found, "{rec}");
    }
}

#[tokio::test]
async fn feedback_round_trip_into_calibrate() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    // A duplicate verdict an operator marks wrong: the export labels the pair distinct.
    let a = run(&mut c, check("refund", r#"{"order": 1, "amount": 5}"#)).await;
    succeed(&mut c, &a.call_id, "{}", None).await;
    let dup = run(&mut c, check("refund", r#"{"amount": 5.0, "order": 1}"#)).await;
    assert_eq!(verdict(&dup), Verdict::Duplicate);
    assert_ne!(dup.check_id, dup.call_id);
    c.report_feedback(proto::FeedbackRequest {
        call_id: dup.check_id.clone(),
        correct: false,
        note: "different refunds".into(),
    })
    .await
    .unwrap();
    // A right duplicate verdict stays a duplicate pair.
    let again = run(&mut c, check("refund", r#"{"order": 1, "amount": 5}"#)).await;
    c.report_feedback(proto::FeedbackRequest {
        call_id: again.check_id.clone(),
        correct: true,
        note: String::new(),
    })
    .await
    .unwrap();
    // Unknown ids are refused.
    let err = c
        .report_feedback(proto::FeedbackRequest {
            call_id: "nope".into(),
            correct: true,
            note: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let export = c
        .export_pairs(proto::ExportPairsRequest {
            tenant: "t".into(),
            since_ms: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(export.pairs_jsonl.len(), 2);
    let pairs: Vec<Value> = export
        .pairs_jsonl
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let wrong = pairs
        .iter()
        .find(|p| p["id"] == dup.check_id.as_str())
        .unwrap();
    assert_eq!(wrong["duplicate"], false);
    assert_eq!(wrong["a"]["tool"], "refund");
    assert_eq!(wrong["b"]["args"]["amount"], 5.0);
    let right = pairs
        .iter()
        .find(|p| p["id"] == again.check_id.as_str())
        .unwrap();
    assert_eq!(right["duplicate"], true);

    // calibrate reads the export.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("judged.jsonl");
    std::fs::write(&path, export.pairs_jsonl.join("\n") + "\n").unwrap();
    let (ok, r, err) = calibrate(&[
        "--pairs",
        &path.display().to_string(),
        "--embedder",
        "none",
        "--json",
    ]);
    assert!(ok, "{err}");
    assert_eq!(r["pairs"], 2);
    assert!(r["malformed"].as_array().unwrap().is_empty());
    // The funnel still calls the wrongly-judged pair a duplicate: it shows up as a false duplicate.
    assert_eq!(r["confusion"]["fp"], 1);
    assert_eq!(r["confusion"]["tp"], 1);
}
