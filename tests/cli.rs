//! The client commands beyond check/complete/get, through the real binary against a real
//! server: `idem calls list` (with a status filter), `idem stats`, `idem session get|set`,
//! `idem wait`, `idem doctor`, each with `--json`.

mod common;

use common::*;
use serde_json::Value;

async fn idem(args: &[&str]) -> (bool, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_idem"))
        .args(args)
        .env_remove("IDEM_TOKEN")
        .env_remove("IDEM_TENANT")
        .output()
        .await
        .expect("idem runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.success(),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn calls_list_stats_and_session_commands_answer_json() {
    let s = TestServer::start().await;
    let server = format!("http://{}", s.addr);
    let mut c = s.client().await;
    let a = run(&mut c, check("send_email", r#"{"to": "a@example.com"}"#)).await;
    let b = run(&mut c, check("send_email", r#"{"to": "b@example.com"}"#)).await;
    succeed(&mut c, &a.call_id, r#"{"ok": 1}"#, Some(2.0)).await;
    run(&mut c, check("send_email", r#"{"to": "a@example.com"}"#)).await;
    let base = ["--server", server.as_str(), "--tenant", "t"];

    let (ok, v, err) =
        idem(&[&["calls", "list"], &base[..], &["--session", "s", "--json"]].concat()).await;
    assert!(ok, "{err}");
    let ids: Vec<&str> = v["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [b.call_id.as_str(), a.call_id.as_str()],
        "newest first"
    );
    let (ok, v, _) = idem(
        &[
            &["calls", "list"],
            &base[..],
            &["--session", "s", "--status", "in-progress", "--json"],
        ]
        .concat(),
    )
    .await;
    assert!(ok);
    assert_eq!(v["calls"].as_array().unwrap().len(), 1);
    assert_eq!(v["calls"][0]["call_id"], b.call_id.as_str());
    let (ok, v, _) = idem(
        &[
            &["calls", "list"],
            &base[..],
            &["--session", "s", "--page-size", "1", "--all", "--json"],
        ]
        .concat(),
    )
    .await;
    assert!(ok);
    assert_eq!(
        v["calls"].as_array().unwrap().len(),
        2,
        "--all follows the pages"
    );

    let (ok, v, err) = idem(&[&["stats"], &base[..], &["--json"]].concat()).await;
    assert!(ok, "{err}");
    assert_eq!(v["checks"], 3);
    assert_eq!(v["replays_served"], 1);
    assert_eq!(v["cost_avoided"], 2.0);

    let (ok, v, err) = idem(
        &[
            &["session", "set"],
            &base[..],
            &[
                "--session",
                "s",
                "--deadline-ms",
                "250",
                "--tool-mode",
                "web_search=off",
                "--json",
            ],
        ]
        .concat(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(v["deadline_ms"], 250);
    let (ok, v, _) = idem(
        &[
            &["session", "get"],
            &base[..],
            &["--session", "s", "--json"],
        ]
        .concat(),
    )
    .await;
    assert!(ok);
    assert_eq!(v["deadline_ms"], 250);
    assert_eq!(v["tools"]["web_search"]["mode"], "off");
    let (ok, _, err) = idem(
        &[
            &["session", "set"],
            &base[..],
            &["--session", "s", "--deadline-ms", "0"],
        ]
        .concat(),
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("InvalidArgument") && err.contains("deadline_ms"),
        "{err}"
    );
    s.stop().await;
}

#[tokio::test]
async fn doctor_passes_against_a_healthy_server_and_names_the_fix_otherwise() {
    let s = TestServer::start().await;
    let data = tempfile::tempdir().unwrap();
    let server = format!("http://{}", s.addr);
    let models = models_dir();
    let data_dir = data.path().to_str().unwrap();
    let (ok, v, err) = idem(&[
        "doctor",
        "--server",
        &server,
        "--models-dir",
        models.to_str().unwrap(),
        "--data-dir",
        data_dir,
        "--json",
    ])
    .await;
    assert!(ok, "{v} {err}");
    let checks: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(checks, ["models", "store", "health", "version"]);
    s.stop().await;

    let empty = tempfile::tempdir().unwrap();
    let (ok, v, _) = idem(&[
        "doctor",
        "--server",
        &server,
        "--models-dir",
        empty.path().to_str().unwrap(),
        "--data-dir",
        data_dir,
        "--json",
    ])
    .await;
    assert!(!ok);
    let failed: Vec<&Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .collect();
    assert_eq!(failed[0]["check"], "models");
    assert!(failed[0]["fix"].as_str().unwrap().contains("make models"));
    assert_eq!(
        failed[1]["check"], "server",
        "the stopped server is reported"
    );
}

#[tokio::test]
async fn session_set_pairs_a_tool_with_its_inverse_and_the_window_follows_the_resource() {
    let s = TestServer::start().await;
    let server = format!("http://{}", s.addr);
    let base = ["--server", server.as_str(), "--tenant", "t"];
    let (ok, v, err) = idem(
        &[
            &["session", "set"],
            &base[..],
            &[
                "--session",
                "s",
                "--tool-inverse",
                "disable_2fa=enable_2fa",
                "--tool-resource-fields",
                "disable_2fa=user_id",
                "--tool-on-lease-expiry",
                "charge=hold",
                "--json",
            ],
        ]
        .concat(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(v["tools"]["disable_2fa"]["inverse_of"], "enable_2fa");
    assert_eq!(v["tools"]["disable_2fa"]["resource_fields"][0], "user_id");
    assert_eq!(v["tools"]["charge"]["on_lease_expiry"], "hold");
    let mut verdicts = Vec::new();
    for tool in ["enable_2fa", "disable_2fa", "enable_2fa", "enable_2fa"] {
        let (ok, v, err) = idem(
            &[
                &["check"],
                &base[..],
                &[
                    "--session",
                    "s",
                    "--tool",
                    tool,
                    "--args",
                    r#"{"user_id": "u-1"}"#,
                    "--json",
                ],
            ]
            .concat(),
        )
        .await;
        assert!(ok, "{err}");
        verdicts.push(v["verdict"].as_str().unwrap().to_string());
    }
    // Nothing completed: the repeat of the second enable is in flight, not the first's.
    assert_eq!(verdicts, ["NEW", "NEW", "NEW", "IN_FLIGHT"]);
    let (ok, _, err) = idem(
        &[
            &["session", "set"],
            &base[..],
            &[
                "--session",
                "s",
                "--tool-inverse",
                "a=a",
                "--tool-resource-fields",
                "a=id",
            ],
        ]
        .concat(),
    )
    .await;
    assert!(!ok);
    assert!(err.contains("inverse_of"), "{err}");
    s.stop().await;
}
