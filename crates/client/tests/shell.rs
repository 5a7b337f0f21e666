//! The shell's script mode against a fake server: statements run in order, the first error
//! stops the script with exit code 1, and the prompt shows an open transaction.
#![allow(clippy::unwrap_used)]

mod fake;

use client::Client;
use client::shell::Shell;
use fake::FakeServer;

async fn shell(server: &FakeServer) -> Shell {
    let client = Client::connect(&server.url()).await.unwrap();
    Shell::new(client, false, false)
}

async fn run(shell: &mut Shell, script: &str) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = shell.run_script(script, &mut out, &mut err).await;
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[tokio::test]
async fn a_script_stops_at_its_first_error() {
    let server = FakeServer::start().await;
    let mut shell = shell(&server).await;
    let script =
        "INSERT INTO t VALUES (1);\nSELECT 'a;b';\nsyntax error;\nINSERT INTO t VALUES (2);";

    let (code, out, err) = run(&mut shell, script).await;

    assert_eq!(code, 1);
    assert!(out.contains("INSERT 1"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");
    assert!(err.contains("ERROR: syntax"), "{err}");
    server.with(|s| assert_eq!(s.executes.len(), 3, "nothing after the error runs"));
}

#[tokio::test]
async fn a_script_runs_meta_commands_and_a_final_statement_without_semicolon() {
    let server = FakeServer::start().await;
    let mut shell = shell(&server).await;

    let (code, out, err) = run(&mut shell, "\\timing on\n\\dt\n\\d accounts\nSELECT 2").await;

    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Timing is on."), "{out}");
    assert!(out.contains("Time: "), "{out}");
    server.with(|s| {
        let sql: Vec<_> = s.executes.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            sql,
            ["SHOW TABLES", "SHOW COLUMNS FROM accounts", "SELECT 2"]
        );
    });
}

#[tokio::test]
async fn the_prompt_shows_an_open_transaction() {
    let server = FakeServer::start().await;
    let mut shell = shell(&server).await;
    assert_eq!(shell.prompt(false), "meridian> ");

    let (code, _, _) = run(&mut shell, "BEGIN; INSERT INTO t VALUES (1);").await;
    assert_eq!(code, 0);
    assert!(shell.in_transaction());
    assert_eq!(shell.prompt(false), "meridian*> ");
    assert_eq!(shell.prompt(true), "meridian-> ");

    let (code, out, _) = run(&mut shell, "COMMIT;").await;
    assert_eq!(code, 0);
    assert!(out.contains("COMMIT (commit_ts 99)"), "{out}");
    assert_eq!(shell.prompt(false), "meridian> ");
}

#[tokio::test]
async fn errors_and_unknown_commands_fail_scripts() {
    let server = FakeServer::start().await;
    let mut shell = shell(&server).await;
    let (code, _, err) = run(&mut shell, "\\frobnicate\nSELECT 1;").await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown command"), "{err}");

    let (code, _, err) = run(&mut shell, "SELECT 'open").await;
    assert_eq!(code, 1);
    assert!(err.contains("unterminated"), "{err}");

    let (code, _, _) = run(&mut shell, "\\q\nsyntax error;").await;
    assert_eq!(code, 0, "\\q ends the script before the error");
}
