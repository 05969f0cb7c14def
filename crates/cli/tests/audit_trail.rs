//! The audit trail holds against a hostile local user, a hostile caller's
//! text and a hostile guest, with the real binaries: refusals of a user
//! without a role (created with `useradd`) are counted and never evict the
//! admin's records; `guestcomm audit --verify` catches a record deleted,
//! altered or reordered in the SQLite file while the daemon was stopped;
//! control characters from a VM name in the URL, exec arguments or a
//! guest's error text never reach the terminal or the daemon's log as such.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use util::daemon::Daemon;
use util::users::TestUser;
use util::wait_until;
use util::wire::{encode, hostile_agent};

const DEADLINE: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `guestcomm audit --verify [--json]`: its exit code and output.
fn verify(d: &Daemon, json: bool) -> (Option<i32>, String) {
    let mut args = vec!["audit", "--verify"];
    if json {
        args.push("--json");
    }
    let out = d.run(&args);
    let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
    (out.status.code(), shown)
}

#[test]
fn refusals_of_a_user_without_a_role_are_counted_and_never_evict_the_admins_records() {
    let Some(user) = TestUser::create("flood") else {
        return;
    };
    let config = format!(
        "[api]\nsocket_group = \"{}\"\n[audit]\nmax_records = 5\n",
        user.name
    );
    let mut d = Daemon::start_with_config("off", &config);
    d.ok(&["vm", "add", "keep-me", "--endpoint", "unix:///nowhere.sock"]);
    const FLOOD: usize = 40;
    let api = d.api();
    // Refused calls of the API and of its WBEM endpoint, alternately.
    let calls: [&[&str]; 2] = [
        &["vm", "list"],
        &["cim", "enumerate", "Msvm_GuestCommunicationService"],
    ];
    for i in 0..FLOOD {
        let out = user.run(
            &util::bin("guestcomm"),
            calls[i % 2],
            &[("GUESTCOMM_API", &api)],
        );
        assert_ne!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    // The refusals past the first ones are counted in one summary record,
    // brought up to date while its window lasts.
    let uid = Value::from(user.uid);
    let counted = |records: &[Value]| util::refusals_counted(records, |r| r["uid"] == uid);
    let in_full = |records: &[Value]| {
        records
            .iter()
            .filter(|r| {
                r["uid"] == uid
                    && ["vm.list", "wbem"].contains(&r["operation"].as_str().unwrap_or(""))
            })
            .inspect(|r| assert_eq!(r["outcome"], "refused"))
            .count() as u64
    };
    // Every refusal recorded in full or counted, once the count is written.
    let mut records = Vec::new();
    let summarized = wait_until(DEADLINE, || {
        records = d.json(&["audit"]).as_array().cloned().unwrap_or_default();
        counted(&records).map(|c| c + in_full(&records)) == Some(FLOOD as u64)
    });
    assert!(
        summarized,
        "not every refusal recorded or counted: {records:#?}"
    );
    assert!(in_full(&records) < FLOOD as u64 / 2, "{records:#?}");

    // Retention (applied at start) keeps 5 records of each chain: the
    // admin's record is not pushed out by the flood.
    d.kill9_and_restart();
    let records = d.audit_settled(&[]);
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "vm.add" && r["vm"] == "keep-me" && r["outcome"] == "ok"),
        "the admin's vm.add was evicted: {records:#?}"
    );
    let flood: Vec<&Value> = records.iter().filter(|r| r["uid"] == uid).collect();
    assert!(
        flood.len() <= 5,
        "retention of the refusals' chain: {flood:#?}"
    );
    assert!(
        flood
            .iter()
            .any(|r| r["operation"] == "refusals.counted" && r["outcome"] == "interrupted"),
        "the count survives as the chain's newest record: {flood:#?}"
    );
    let (code, shown) = verify(&d, false);
    assert_eq!(code, Some(0), "{shown}");
}

/// A daemon with four audited operations, stopped (SIGKILL) so that its
/// database can be edited: `vm.add` a, b, c, then `vm.rm` a.
fn daemon_with_records(config: &str) -> Daemon {
    let mut d = Daemon::start_with_config("off", config);
    for vm in ["a", "b", "c"] {
        d.ok(&["vm", "add", vm, "--endpoint", "unix:///nowhere.sock"]);
    }
    d.ok(&["vm", "rm", "a"]);
    let (code, shown) = verify(&d, false);
    assert_eq!(code, Some(0), "untouched: {shown}");
    assert!(shown.contains("intact"), "{shown}");
    d.kill9();
    d
}

/// Runs `sql` on the stopped daemon's database, then starts it again.
fn tamper(d: &mut Daemon, sql: &str) {
    let db = d.dir.path().join("state").join("guestcommd.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    d.restart();
}

#[test]
fn audit_verify_catches_a_deleted_an_altered_and_a_reordered_record() {
    let cases = [
        (
            "deleted",
            "DELETE FROM audit WHERE operation = 'vm.add' AND vm = 'b'",
            "missing: deleted",
        ),
        (
            "altered",
            "UPDATE audit SET uid = 4242 WHERE operation = 'vm.add' AND vm = 'c'",
            "does not match its digest",
        ),
        (
            "reordered",
            "UPDATE audit SET seq = -seq WHERE chain = 0 AND seq IN (1, 2);
             UPDATE audit SET seq = 3 + seq WHERE chain = 0 AND seq IN (-1, -2);",
            "does not match its digest",
        ),
        (
            "newest deleted",
            "DELETE FROM audit WHERE operation = 'vm.rm'",
            "newest records were deleted",
        ),
        (
            "inserted",
            "INSERT INTO audit (time_ms, uid, operation, vm, outcome) VALUES (1, 0, 'vm.rm', 'b', 'ok')",
            "outside the chain: inserted",
        ),
    ];
    for (name, sql, expected) in cases {
        let mut d = daemon_with_records("");
        tamper(&mut d, sql);
        let (code, shown) = verify(&d, false);
        assert_eq!(code, Some(3), "{name}: {shown}");
        assert!(
            shown.contains(expected) && shown.contains("tampered"),
            "{name}: {shown}"
        );
        let (code, json) = verify(&d, true);
        assert_eq!(code, Some(3), "{name}: {json}");
        let report: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(report["intact"], false, "{name}");
    }
}

#[test]
fn audit_verify_passes_after_retention_pruned_the_oldest_records() {
    let mut d = daemon_with_records("[audit]\nmax_records = 2\n");
    // Retention is applied at start: two of the four records go.
    d.restart();
    let (code, json) = verify(&d, true);
    assert_eq!(code, Some(0), "{json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    let operations = &report["chains"][0];
    assert_eq!(operations["chain"], "operations");
    assert_eq!(
        (
            operations["anchor_seq"].as_i64(),
            operations["records"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(operations["head_seq"], 4);
    // Pruned records are gone from the listing, the chain still verifies.
    let records = d.audit_settled(&[]);
    assert_eq!(records.len(), 2, "{records:#?}");
}

/// Sends an HTTP `request` (with `Connection: close`) and returns the answer.
fn http(mut sock: impl Read + Write, request: &str) -> String {
    sock.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = sock.read_to_end(&mut answer);
    text(&answer)
}

/// Sends `GET path` on the API socket by hand (the CLI checks VM names).
fn raw_get(d: &Daemon, path: &str) -> String {
    let sock = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    http(
        sock,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn control_characters_from_a_vm_name_exec_arguments_and_a_guest_forge_no_audit_or_log_line() {
    let d = Daemon::start_logging("off");
    let socket = d.dir.path().join("agent.sock");
    let agent_log = d.dir.path().join("agent.log");
    let _agent = util::daemon::AgentAt::start_logging(&socket, &agent_log);
    let endpoint = format!("unix://{}", socket.display());
    d.ok(&["vm", "add", "web", "--endpoint", &endpoint]);
    // A VM name in the URL with a newline, a fake record and a line erase.
    let answer = raw_get(
        &d,
        "/v1/vms/x%0AFORGED-LINE%20vm.rm%20ok%1B%5B2K%E2%80%AE/info",
    );
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    // An exec argument with a terminal title change.
    let out = d.run(&["exec", "web", "--", "echo", "\u{1b}]0;owned\u{7}"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A guest error text quoting a command name with a line erase.
    let out = d.run(&["exec", "web", "--", "no-such\u{1b}[2K\rcopy finished OK"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(!err.contains('\u{1b}') && !err.contains('\r'), "{err:?}");
    assert!(err.contains("\\u{1b}[2K\\rcopy finished OK"), "{err:?}");

    // A copy's guest path, which the agent logs.
    let src = d.dir.path().join("src.txt");
    std::fs::write(&src, "x").unwrap();
    let guest_dir = tempfile::tempdir().unwrap();
    let dst = format!(
        "web:{}/a\u{1b}[2K\nFORGED-LINE copy finished OK",
        guest_dir.path().display()
    );
    let _ = d.run(&["cp", src.to_str().unwrap(), &dst]);

    let records = d.audit_settled(&[]);
    let forged_vm = "x\nFORGED-LINE vm.rm ok\u{1b}[2K\u{202e}";
    assert!(
        records.iter().any(|r| r["vm"] == forged_vm),
        "the JSON keeps the name exactly: {records:#?}"
    );
    let table = d.ok(&["audit"]);
    for unsafe_char in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
        assert!(!table.contains(unsafe_char), "{unsafe_char:?} in {table:?}");
    }
    assert!(
        !table.lines().any(|l| l.starts_with("FORGED-LINE")),
        "{table}"
    );
    assert!(
        table.contains("x\\nFORGED-LINE vm.rm ok\\u{1b}[2K\\u{202e}"),
        "{table}"
    );
    assert!(table.contains("\\u{1b}]0;owned\\u{7}"), "{table}");

    let log = d.log();
    assert!(log.contains("FORGED-LINE"), "the refusal is logged: {log}");
    for unsafe_char in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
        assert!(
            !log.contains(unsafe_char),
            "{unsafe_char:?} in the log: {log:?}"
        );
    }
    assert!(!log.lines().any(|l| l.starts_with("FORGED-LINE")), "{log}");

    let log = String::from_utf8_lossy(&std::fs::read(&agent_log).unwrap()).into_owned();
    assert!(
        log.contains("FORGED-LINE copy finished OK"),
        "the copy is logged: {log}"
    );
    for unsafe_char in ['\u{1b}', '\u{7}', '\r'] {
        assert!(
            !log.contains(unsafe_char),
            "{unsafe_char:?} in the agent's log: {log:?}"
        );
    }
    assert!(!log.lines().any(|l| l.starts_with("FORGED-LINE")), "{log}");
}

/// The error frame a hostile guest sends to whatever was asked.
fn hostile_error() -> Vec<u8> {
    use guestcomm_protocol::{Control, ErrorCode, ErrorFrame, Frame};
    encode(vec![Frame::Control(Control::Error(ErrorFrame::new(
        ErrorCode::Internal,
        "\u{1b}]0;pwned\u{7}\u{1b}[1A\u{1b}[2K\rcopy finished OK\n\u{9b}31m",
    )))])
}

fn run_cli(args: &[&str]) -> Output {
    Command::new(util::bin("guestcomm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_hostile_guests_text_reaches_the_terminal_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("f");
    let dst = dst.to_str().unwrap();
    for command in ["exec", "info", "cp"] {
        let (_sock_dir, addr, thread) = hostile_agent(hostile_error());
        let args: Vec<String> = match command {
            "exec" => vec!["exec".into(), addr, "--".into(), "true".into()],
            "info" => vec!["info".into(), addr],
            _ => vec!["cp".into(), format!("{addr}:/etc/hostname"), dst.into()],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_cli(&args);
        thread.join().unwrap();
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!out.status.success(), "{args:?}: {shown:?}");
        for unsafe_char in ['\u{1b}', '\u{7}', '\r', '\u{9b}'] {
            assert!(
                !shown.contains(unsafe_char),
                "{args:?}: {unsafe_char:?} in {shown:?}"
            );
        }
        assert!(
            shown.contains(
                "\\u{1b}]0;pwned\\u{7}\\u{1b}[1A\\u{1b}[2K\\rcopy finished OK\\n\\u{9b}31m"
            ),
            "{args:?}: {shown:?}"
        );
        assert_eq!(
            text(&out.stderr).lines().count(),
            1,
            "{args:?}: one line: {shown:?}"
        );
    }
}

#[test]
fn a_hostile_guests_info_fields_and_key_value_pairs_reach_the_terminal_escaped() {
    use guestcomm_protocol::integration::{GuestInfo, KvpPool};
    use guestcomm_protocol::{Control, Frame};
    const EVIL: &str = "host\u{1b}]0;pwned\u{7}\n\u{1b}[2KFORGED: copy finished OK\u{202e}";
    let info = Control::GuestInfo(Box::new(GuestInfo {
        hostname: EVIL.into(),
        agent: EVIL.into(),
        ..GuestInfo::default()
    }));
    let pairs = Control::KvpEntries {
        pool: KvpPool::Guest,
        entries: [(format!("key{EVIL}"), EVIL.to_string())].into(),
    };
    let escaped = "host\\u{1b}]0;pwned\\u{7}\\n\\u{1b}[2KFORGED: copy finished OK\\u{202e}";
    for (answer, args) in [
        (info, vec!["info"]),
        (pairs, vec!["kvp", "list", "--pool", "guest"]),
    ] {
        let (_sock_dir, addr, thread) = hostile_agent(encode(vec![Frame::Control(answer)]));
        let mut args = args;
        args.insert(if args[0] == "kvp" { 2 } else { 1 }, &addr);
        let out = run_cli(&args);
        thread.join().unwrap();
        let shown = text(&out.stdout);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        for unsafe_char in ['\u{1b}', '\u{7}', '\u{202e}'] {
            assert!(
                !shown.contains(unsafe_char),
                "{args:?}: {unsafe_char:?} in {shown:?}"
            );
        }
        assert!(shown.contains(escaped), "{args:?}: {shown:?}");
        assert!(
            !shown
                .lines()
                .any(|l| l.starts_with("\u{1b}[2KFORGED") || l.starts_with("FORGED")),
            "{shown:?}"
        );
    }
}

/// Posts a refused InvokeMethod (RequestStateChange needs admin: 32769
/// Access Denied) to the WBEM port, as any local process can; returns the
/// HTTP answer.
fn refused_wbem_call(port: u16) -> String {
    use guestcomm_cim::value::InstanceName;
    use guestcomm_cim::xml::client::{method_request, Arg};
    let target = InstanceName::parse_path(
        "Msvm_GuestCommunicationService.CreationClassName=\"Msvm_GuestCommunicationService\",Name=\"x\"",
    )
    .unwrap();
    let body = method_request(
        1,
        "RequestStateChange",
        guestcomm_cim::NAMESPACE,
        &target,
        &[("RequestedState".into(), Arg::Value("3".into()))],
    );
    let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    http(
        sock,
        &format!(
            "POST /cimom HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/xml; charset=\"utf-8\"\r\n\
             CIMOperation: MethodCall\r\nCIMMethod: RequestStateChange\r\n\
             CIMObject: {}:Msvm_GuestCommunicationService\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            guestcomm_cim::NAMESPACE,
            body.len()
        ),
    )
}

#[test]
fn refused_calls_on_the_wbem_port_are_counted_and_never_evict_the_admins_records() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wbem = format!("tcp://127.0.0.1:{port}");
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("guestcommd.toml");
    std::fs::write(&config, "[audit]\nmax_records = 5\n").unwrap();
    let mut d = Daemon::start_with(
        "off",
        &["--wbem", &wbem, "--config", config.to_str().unwrap()],
    );
    assert!(wait_until(DEADLINE, || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    d.ok(&["vm", "add", "keep-me", "--endpoint", "unix:///nowhere.sock"]);
    const FLOOD: u64 = 30;
    for _ in 0..FLOOD {
        let answer = refused_wbem_call(port);
        assert!(
            answer.contains("<RETURNVALUE PARAMTYPE=\"uint32\"><VALUE>32769</VALUE>"),
            "Access Denied: {answer}"
        );
    }
    let anonymous = |r: &&Value| r["uid"].is_null() && r["certificate"].is_null();
    let mut records = Vec::new();
    let all_counted = wait_until(DEADLINE, || {
        records = d.json(&["audit"]).as_array().cloned().unwrap_or_default();
        let full = records
            .iter()
            .filter(anonymous)
            .filter(|r| r["operation"] == "wbem.invoke" && r["outcome"] == "refused")
            .count() as u64;
        let counted = util::refusals_counted(&records, |r| anonymous(&r));
        counted.map(|c| c + full) == Some(FLOOD)
    });
    assert!(all_counted, "{records:#?}");
    d.kill9_and_restart();
    let records = d.audit_settled(&[]);
    assert!(
        records
            .iter()
            .any(|r| r["operation"] == "vm.add" && r["vm"] == "keep-me"),
        "{records:#?}"
    );
}
