//! The official `openai` Python client, unchanged, against the real server: list models,
//! chat, complete, stream, and an error (installed into `.venv` by `make pydeps`).

use inferd_tests::{start_default_server, workspace_root};

#[tokio::test]
async fn the_official_openai_python_client_works_unchanged() {
    let python = workspace_root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make pydeps` (done by `make test`)",
        python.display()
    );
    let server = start_default_server().await;
    let out = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/python/openai_client.py"))
        .arg(server.url("/v1"))
        .arg(&server.model)
        .output()
        .await
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai client failed:\n{stdout}\n{stderr}"
    );
    for check in [
        "models ok",
        "chat ok",
        "chat stream ok",
        "completions ok",
        "errors ok",
    ] {
        assert!(stdout.contains(check), "missing {check:?} in:\n{stdout}");
    }
}
