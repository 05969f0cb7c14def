//! Prometheus metrics: guestcommd with an agent runs execs, a copy, an
//! exec its host policy refuses, one a viewer's role refuses and one of a
//! disabled service; then
//! `GET /metrics` on the API socket (root and the viewer) and on the
//! `--metrics` listener shows each counter with its labels (OpenMetrics
//! when asked for, as Prometheus does, else the classic text format, which
//! `promtool check metrics` accepts), a removed VM loses its series, and a
//! real Prometheus (Debian's `prometheus`, started here on a free port with
//! its storage in a temporary directory) scrapes the listener and answers
//! the same values through its query API. The Grafana dashboard and the
//! alert rules in contrib/ name only metrics that exist. Without prometheus/promtool the
//! Prometheus parts say SKIPPED loudly, and fail when
//! GUESTCOMM_PROMETHEUS_REQUIRED is set (.ci/run sets it once installed).

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use util::daemon::Daemon;
use util::users::TestUser;
use util::{bin, wait_until, STARTUP_DEADLINE};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
const EXEC_GUID: &str = "00004744-facb-11e6-bd58-64006a7986d3";

/// Whether `tool` is installed; panics when the Prometheus tools must be.
fn have(tool: &str, test: &str) -> bool {
    if Path::new(tool).exists() {
        return true;
    }
    assert!(
        std::env::var_os("GUESTCOMM_PROMETHEUS_REQUIRED").is_none(),
        "GUESTCOMM_PROMETHEUS_REQUIRED is set but {tool} is missing"
    );
    eprintln!(
        "*** {test}: SKIPPED: {tool} is not installed (apt-get install --no-install-recommends prometheus; .ci/run does) ***"
    );
    false
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// What Prometheus asks for.
const OPEN_METRICS: &str =
    "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n";

/// One HTTP/1.1 request on `stream` (closed after) with `headers` (lines
/// ending in CRLF): the status line and headers, and the body.
fn http(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    headers: &str,
) -> (String, String) {
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    (head.to_string(), body.to_string())
}

fn tcp(port: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(STARTUP_DEADLINE)).unwrap();
    stream
}

fn scrape_api(d: &Daemon) -> String {
    let sock = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    sock.set_read_timeout(Some(STARTUP_DEADLINE)).unwrap();
    let (head, body) = http(sock, "GET", "/metrics", OPEN_METRICS);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

fn scrape_listener(port: u16, headers: &str) -> (String, String) {
    http(tcp(port), "GET", "/metrics", headers)
}

/// The value of the one sample whose line starts with `name{` and holds
/// every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let prefix = format!("{name}{{");
    let found: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?}: {found:?} in\n{text}");
    found.first().copied()
}

/// Prometheus on a free port, scraping `target` every 200 ms, killed by
/// PID when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\nscrape_configs:\n  - job_name: guestcommd\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    /// The result vector of instant query `query`, or `None` while
    /// Prometheus does not answer yet.
    fn query(&self, query: &str) -> Option<Vec<serde_json::Value>> {
        let encoded: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(STARTUP_DEADLINE)).unwrap();
        let (head, body) = http(stream, "GET", &format!("/api/v1/query?query={encoded}"), "");
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn operations_refusals_and_copies_are_counted_with_bounded_labels_and_prometheus_scrapes_them() {
    let Some(user) = TestUser::create("m") else {
        return;
    };
    let port = free_port();
    let config = format!(
        "[api]\nsocket_group = \"{0}\"\n[roles]\nviewer = {{ users = [\"{0}\"] }}\n[metrics]\nlisten = \"tcp://127.0.0.1:{port}\"\n",
        user.name
    );
    let d = Daemon::start_with_config("200ms", &config);
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    assert!(
        wait_until(STARTUP_DEADLINE, || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "the metrics listener did not start"
    );
    let (_agent, _) = d.agent_vm("vm1");
    d.add_unreachable_vm("vm2");
    let inbox = d.dir.path().join("in");
    std::fs::create_dir(&inbox).unwrap();
    let policy = format!(
        "[exec]\nallow = [{{ program = \"/usr/bin/uptime\" }}]\n[cp]\nto_guest = [\"{}\"]\n",
        inbox.display()
    );
    let out = d.run_with_stdin(&["policy", "set", "vm1", "-"], policy.into_bytes());
    assert!(out.status.success());

    d.ok(&["exec", "vm1", "--", "uptime"]);
    d.ok(&["exec", "vm1", "--", "uptime"]);
    let refused = d.run(&["exec", "vm1", "--", "sh", "-c", "echo secret-command-line"]);
    assert_eq!(refused.status.code(), Some(126));
    let payload = d.dir.path().join("payload.bin");
    std::fs::write(&payload, vec![7u8; 10_000]).unwrap();
    d.ok(&[
        "cp",
        payload.to_str().unwrap(),
        &format!("vm1:{}", inbox.join("payload.bin").display()),
    ]);
    let api = d.api();
    let as_viewer = user.run(
        &util::bin("guestcomm"),
        &["exec", "vm1", "--", "uptime"],
        &[("GUESTCOMM_API", &api)],
    );
    assert_eq!(as_viewer.status.code(), Some(125));
    // A WBEM method is the admin's: the viewer's call is refused by role.
    let query =
        format!("SELECT Name FROM Msvm_GuestCommunicationService WHERE Name = '{EXEC_GUID}'");
    let exec_path = d
        .ok(&["cim", "query", &query])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let invoked = user.run(
        &util::bin("guestcomm"),
        &[
            "cim",
            "invoke",
            &exec_path,
            "RequestStateChange",
            "RequestedState=3",
        ],
        &[("GUESTCOMM_API", &api)],
    );
    assert_eq!(
        String::from_utf8_lossy(&invoked.stdout).trim(),
        "ReturnValue = 32769",
        "{invoked:?}"
    );
    assert!(!d.run(&["exec", "vm2", "--", "uptime"]).status.success());
    d.ok(&["service", "disable", EXEC_GUID, "--vm", "vm1"]);
    let disabled = d.run(&["exec", "vm1", "--", "uptime"]);
    assert_eq!(disabled.status.code(), Some(126));
    d.ok(&["service", "enable", EXEC_GUID, "--vm", "vm1"]);
    // Every relayed record complete before the counters are read.
    d.audit_settled(&[]);

    // The health monitor has seen vm1's agent: the exposition says so.
    let mut text = String::new();
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            text = scrape_api(&d);
            sample(
                &text,
                "guestcomm_vm_health",
                &[r#"vm="vm1""#, r#"state="OK""#],
            ) == Some(1.0)
        }),
        "{text}"
    );
    let ops = "guestcomm_operations_total";
    let vm1 = r#"vm="vm1""#;
    assert_eq!(
        sample(&text, ops, &[vm1, r#"op="exec""#, r#"outcome="ok""#]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &[vm1, r#"op="exec""#, r#"outcome="refused_policy""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &[vm1, r#"op="vm.connect""#, r#"outcome="refused_role""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &[r#"op="wbem.invoke""#, r#"outcome="refused_role""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, ops, &[vm1, r#"op="cp.to_guest""#, r#"outcome="ok""#]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &[r#"vm="vm2""#, r#"op="vm.connect""#, r#"outcome="failed""#]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            ops,
            &[vm1, r#"op="exec""#, r#"outcome="refused_disabled""#]
        ),
        Some(1.0)
    );
    // The exec service's id is a label: the registry holds it.
    let exec_service = format!(r#"service="{EXEC_GUID}""#);
    assert_eq!(
        sample(
            &text,
            ops,
            &[vm1, &exec_service, r#"op="exec""#, r#"outcome="ok""#]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "guestcomm_exec_duration_seconds_count", &[vm1]),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "guestcomm_copy_duration_seconds_count",
            &[vm1, r#"direction="to_guest""#]
        ),
        Some(1.0)
    );
    let copied = sample(
        &text,
        "guestcomm_copy_bytes_total",
        &[vm1, r#"direction="to_guest""#],
    )
    .unwrap();
    assert!(copied >= 10_000.0, "{copied}");
    assert!(sample(&text, "guestcomm_vm_heartbeat_round_trip_seconds", &[vm1]).unwrap() > 0.0);
    assert_eq!(
        sample(
            &text,
            "guestcomm_vm_health",
            &[r#"vm="vm2""#, r#"state="OK""#]
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &text,
            "guestcomm_audit_records_total",
            &[r#"chain="operations""#]
        )
        .unwrap()
            >= 7.0
    );
    assert!(text.contains("guestcomm_store_call_duration_seconds_count "));
    assert!(text.contains("guestcomm_relays_active 0"));
    assert!(!text.contains("secret-command-line") && !text.contains("payload"));
    assert!(text.ends_with("# EOF\n"));

    // A viewer may scrape the API too.
    if Path::new("/usr/bin/curl").exists() {
        let sock = d.socket.to_str().unwrap();
        let out = user.run(
            Path::new("/usr/bin/curl"),
            &["-sf", "--unix-socket", sock, "http://localhost/metrics"],
            &[],
        );
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains(ops));
    }

    // The listener: GET /metrics only, OpenMetrics text.
    let (head, body) = scrape_listener(port, OPEN_METRICS);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert_eq!(
        sample(&body, ops, &[vm1, r#"op="exec""#, r#"outcome="ok""#]),
        Some(2.0)
    );
    for (method, path) in [("GET", "/v1/vms"), ("POST", "/metrics"), ("GET", "/cimom")] {
        let (head, _) = http(tcp(port), method, path, "");
        assert!(head.starts_with("HTTP/1.1 404"), "{method} {path}: {head}");
    }

    assert!(body.ends_with("# EOF\n"));
    // Without OpenMetrics in Accept (curl, promtool): the classic text.
    let (head, body) = scrape_listener(port, "");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(body.contains("# TYPE guestcomm_operations_total counter\n"));
    assert_eq!(
        sample(&body, ops, &[vm1, r#"op="exec""#, r#"outcome="ok""#]),
        Some(2.0)
    );
    // The agents' own counters come with the probes once the metrics are
    // being read (this test's scrapes).
    let mut body = body;
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            body = scrape_listener(port, "").1;
            body.contains("guestcomm_agent_requests_total{")
        }),
        "no agent counters: {body}"
    );
    // The dashboard and the alert rules ask only for metrics that exist.
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib");
    for file in ["grafana/guestcomm.json", "prometheus/alerts.yml"] {
        let text = std::fs::read_to_string(contrib.join(file)).unwrap();
        let names = text.match_indices("guestcomm_").map(|(at, _)| {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        });
        for name in names {
            assert!(body.contains(name), "{file} names {name}, not exposed");
        }
    }
    if have(PROMTOOL, "promtool check metrics") {
        let mut check = Command::new(PROMTOOL)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool check metrics: {out:?}");
    }

    if have(PROMETHEUS, "a real Prometheus") {
        let prometheus = Prometheus::start(port);
        let mut seen = Vec::new();
        let found = wait_until(Duration::from_secs(60), || {
            seen = prometheus
                .query(r#"guestcomm_operations_total{vm="vm1",op="exec"}"#)
                .unwrap_or_default();
            seen.len() == 3
        });
        assert!(found, "{seen:#?}");
        let value = |outcome: &str| {
            seen.iter()
                .find(|s| s["metric"]["outcome"] == outcome)
                .map(|s| s["value"][1].as_str().unwrap().to_string())
        };
        assert_eq!(value("ok").as_deref(), Some("2"), "{seen:#?}");
        assert_eq!(value("refused_policy").as_deref(), Some("1"), "{seen:#?}");
        assert_eq!(value("refused_disabled").as_deref(), Some("1"), "{seen:#?}");
        assert_eq!(seen[0]["metric"]["job"], "guestcommd");
        let health = prometheus
            .query(r#"guestcomm_vm_health{vm="vm1",state="OK"}"#)
            .unwrap();
        assert_eq!(health[0]["value"][1], "1", "{health:#?}");
    }

    // A VM removed from the inventory loses its series.
    d.ok(&["vm", "rm", "vm2"]);
    let text = scrape_api(&d);
    assert!(!text.contains(r#"vm="vm2""#), "{text}");
    assert!(text.contains(r#"vm="vm1""#));
}

#[test]
fn the_alert_rules_pass_promtool() {
    if !have(PROMTOOL, "promtool check rules") {
        return;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/prometheus/alerts.yml");
    let out = Command::new(PROMTOOL)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// `--no-metrics`: operations run as before, `GET /metrics` is refused
/// saying why, and serving metrics while they are off is refused at start.
#[test]
fn with_no_metrics_nothing_is_recorded_and_the_exposition_says_why() {
    let d = Daemon::start_with("200ms", &["--no-metrics"]);
    let (_agent, _) = d.agent_vm("vm1");
    d.ok(&["exec", "vm1", "--", "true"]);
    let sock = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    sock.set_read_timeout(Some(STARTUP_DEADLINE)).unwrap();
    let (head, body) = http(sock, "GET", "/metrics", "");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}\n{body}");
    assert!(body.contains("metrics are off"), "{body}");

    // Off by the configuration, yet served by a flag: a clear refusal.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("guestcommd.toml");
    std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
    let out = guestcomm_vmtest::run_with_deadline(
        {
            let mut c = Command::new(bin("guestcommd"));
            c.arg("--config")
                .arg(&config)
                .args(["--state"])
                .arg(dir.path().join("state"))
                .arg("--api")
                .arg(format!("unix://{}", dir.path().join("api.sock").display()))
                .args(["--metrics", "tcp://127.0.0.1:1"]);
            c
        },
        None,
        STARTUP_DEADLINE,
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("metrics are off"), "{stderr}");
    assert!(stderr.contains("drop one of the two"), "{stderr}");
}

/// The agent's own counters, from its heartbeat answers: its accepted
/// connections, a handshake with the wrong key, the requests by service,
/// a request its guest policy refused and the file bytes copied in, each
/// under the VM's name.
#[test]
fn the_agents_own_counters_are_exported_per_vm() {
    let d = Daemon::start("200ms");
    let (_agent, socket, _) = d.keyed_agent_vm("vm1");
    d.ok(&["exec", "vm1", "--", "true"]);
    d.ok(&["exec", "vm1", "--", "true"]);
    let payload = d.dir.path().join("payload.bin");
    std::fs::write(&payload, vec![7u8; 12_345]).unwrap();
    let inbox = d.dir.path().join("inbox");
    std::fs::create_dir(&inbox).unwrap();
    d.ok(&[
        "cp",
        payload.to_str().unwrap(),
        &format!("vm1:{}", inbox.join("payload.bin").display()),
    ]);
    // Straight to the agent with a key of its own: refused at the handshake.
    let wrong = d.dir.path().join("wrong.key");
    d.ok(&["identity", "new", wrong.to_str().unwrap()]);
    let endpoint = format!("unix://{}", socket.display());
    let refused = d.run(&[
        "exec",
        &endpoint,
        "--identity",
        wrong.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert!(!refused.status.success());

    let want = [
        (
            "guestcomm_agent_requests_total",
            vec!["vm=\"vm1\"", "service=\"exec\""],
            2.0,
        ),
        (
            "guestcomm_agent_requests_total",
            vec!["vm=\"vm1\"", "service=\"files\""],
            1.0,
        ),
        (
            "guestcomm_agent_auth_failures_total",
            vec!["vm=\"vm1\""],
            1.0,
        ),
        (
            "guestcomm_agent_copy_bytes_total",
            vec!["vm=\"vm1\"", "direction=\"to_guest\""],
            12_345.0,
        ),
    ];
    let mut text = String::new();
    let counted = wait_until(STARTUP_DEADLINE, || {
        text = scrape_api(&d);
        want.iter()
            .all(|(name, labels, n)| sample(&text, name, labels) == Some(*n))
    });
    assert!(counted, "{text}");
    // Every connection counted: two execs, a copy, the refused one, and the
    // health probes' (kept open: their heartbeats share one connection).
    let connections = sample(&text, "guestcomm_agent_connections_total", &["vm=\"vm1\""]).unwrap();
    let heartbeats = sample(
        &text,
        "guestcomm_agent_requests_total",
        &["vm=\"vm1\"", "service=\"heartbeat\""],
    )
    .unwrap();
    assert!(
        connections >= 5.0 && heartbeats >= 1.0,
        "{connections} {heartbeats}\n{text}"
    );
    assert_eq!(
        sample(&text, "guestcomm_agent_refused_total", &["vm=\"vm1\""]),
        Some(0.0)
    );
}
