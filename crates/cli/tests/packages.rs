//! The Debian packages (scripts/package): what they hold, what lintian
//! says, and an install on this machine: the installed guestcommd and
//! guestcomm work together, the man page renders, bash completes, an
//! upgrade keeps the state and a changed configuration, and a purge leaves
//! no files behind (the group stays, as Debian keeps system groups; the
//! test removes the one it caused).
//!
//! Needs cargo-deb, dpkg, lintian and readelf, and root for `dpkg -i`;
//! without them the tests say SKIPPED, or fail when
//! GUESTCOMM_PACKAGES_REQUIRED is set (.ci/run sets it after installing
//! them). The packages come from GUESTCOMM_PACKAGE_DIR when .ci/run already
//! built them there, else from `bash scripts/package` (once per run). The
//! install refuses to start if a guestcomm package is already installed:
//! its purge would remove someone's setup.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use util::{wait_until, STARTUP_DEADLINE};

const HOST: &str = "guestcomm";
const AGENT: &str = "guestcomm-agent";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn has(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether the tools are here; says SKIPPED (or fails when required) if not.
fn tools_ready(test: &str, need_root: bool) -> bool {
    let mut missing: Vec<&str> = [
        ("cargo-deb", "--version"),
        ("dpkg", "--version"),
        ("dpkg-deb", "--version"),
        ("lintian", "--version"),
        ("readelf", "--version"),
    ]
    .into_iter()
    .filter(|(program, arg)| !has(program, arg))
    .map(|(program, _)| program)
    .collect();
    if need_root && !nix::unistd::Uid::effective().is_root() {
        missing.push("root (for dpkg -i)");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("GUESTCOMM_PACKAGES_REQUIRED").is_none(),
        "GUESTCOMM_PACKAGES_REQUIRED is set but {} missing",
        missing.join(", ")
    );
    eprintln!(
        "*** {test}: SKIPPED: {} missing (cargo install cargo-deb --locked; apt-get install lintian binutils; .ci/run does) ***",
        missing.join(", ")
    );
    false
}

/// The two .deb files: from GUESTCOMM_PACKAGE_DIR, or built once.
fn packages() -> &'static (PathBuf, PathBuf) {
    static PACKAGES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        let dir = match std::env::var_os("GUESTCOMM_PACKAGE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let out = Command::new("bash")
                    .arg(workspace().join("scripts/package"))
                    .stdin(Stdio::null())
                    .output()
                    .expect("run scripts/package");
                assert!(
                    out.status.success(),
                    "scripts/package failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                workspace().join("target/debian")
            }
        };
        (find_deb(&dir, HOST), find_deb(&dir, AGENT))
    })
}

/// `dir/NAME_VERSION_ARCH.deb` (the only one of that package).
fn find_deb(dir: &Path, name: &str) -> PathBuf {
    let prefix = format!("{name}_");
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {name} .deb in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap_or_default()
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeded(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

fn deb_text(deb: &Path) -> &str {
    deb.to_str().expect("UTF-8 path")
}

#[test]
fn packages_hold_binaries_unit_conffile_pages_and_completions_and_pass_lintian() {
    if !tools_ready(
        "packages_hold_binaries_unit_conffile_pages_and_completions_and_pass_lintian",
        false,
    ) {
        return;
    }
    let (host, agent) = packages();
    let contents = succeeded("dpkg-deb", &["--contents", deb_text(host)]);
    for path in [
        "./usr/bin/guestcomm",
        "./usr/sbin/guestcommd",
        "./usr/lib/systemd/system/guestcommd.service",
        "./etc/guestcomm/guestcommd.toml",
        "./usr/share/man/man1/guestcomm.1.gz",
        "./usr/share/man/man1/guestcomm-exec.1.gz",
        "./usr/share/man/man1/guestcomm-vm-add.1.gz",
        "./usr/share/man/man8/guestcommd.8.gz",
        "./usr/share/bash-completion/completions/guestcomm",
        "./usr/share/zsh/vendor-completions/_guestcomm",
        "./usr/share/fish/vendor_completions.d/guestcomm.fish",
        "./usr/share/doc/guestcomm/copyright",
        "./usr/share/doc/guestcomm/changelog.Debian.gz",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from {HOST}:\n{contents}"
        );
    }
    let info = succeeded("dpkg-deb", &["--info", deb_text(host)]);
    for field in [
        "Package: guestcomm\n",
        "Section: admin",
        "Priority: optional",
        "adduser",
    ] {
        assert!(
            info.contains(field),
            "{field:?} missing from {HOST}'s control:\n{info}"
        );
    }
    let conffiles = succeeded("dpkg-deb", &["--info", deb_text(host), "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/guestcomm/guestcommd.toml");
    let postinst = succeeded("dpkg-deb", &["--info", deb_text(host), "postinst"]);
    assert!(postinst.contains("addgroup --system"), "{postinst}");
    // Neither unit starts at install; an upgrade ($2, the old version, set)
    // restarts a running one, and the prerm stops it on removal only.
    for (deb, unit) in [(host, "guestcommd"), (agent, "guestcomm-agent")] {
        let postinst = succeeded("dpkg-deb", &["--info", deb_text(deb), "postinst"]);
        assert!(
            !postinst.contains("deb-systemd-invoke start"),
            "started at install:\n{postinst}"
        );
        let restart = format!("deb-systemd-invoke try-restart {unit}.service");
        let upgrade = postinst
            .split("if [ -n \"$2\" ]; then")
            .nth(1)
            .unwrap_or_default();
        assert!(
            upgrade.trim_start().starts_with(&restart),
            "no restart on upgrade:\n{postinst}"
        );
        let prerm = succeeded("dpkg-deb", &["--info", deb_text(deb), "prerm"]);
        assert!(
            prerm.contains("[ \"$1\" = remove ]") && prerm.contains("stop"),
            "{prerm}"
        );
    }

    let contents = succeeded("dpkg-deb", &["--contents", deb_text(agent)]);
    for path in [
        "./usr/bin/guestcomm-agent",
        "./usr/lib/systemd/system/guestcomm-agent.service",
        "./usr/share/man/man8/guestcomm-agent.8.gz",
        "./usr/share/man/man8/guestcomm-agent-kvp.8.gz",
    ] {
        assert!(
            contents.contains(path),
            "{path} missing from {AGENT}:\n{contents}"
        );
    }
    let info = succeeded("dpkg-deb", &["--info", deb_text(agent)]);
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"));
    assert!(
        depends.is_none_or(|l| l.trim() == "Depends:"),
        "the static agent depends on nothing: {depends:?}"
    );
    // The agent and the CLI are static: no program interpreter, no shared
    // libraries. guestcommd is not.
    let unpacked = tempfile::tempdir().expect("tempdir");
    let root = unpacked.path().to_str().expect("UTF-8 path");
    succeeded("dpkg-deb", &["-x", deb_text(agent), root]);
    succeeded("dpkg-deb", &["-x", deb_text(host), root]);
    for (path, is_static) in [
        ("usr/bin/guestcomm-agent", true),
        ("usr/bin/guestcomm", true),
        ("usr/sbin/guestcommd", false),
    ] {
        let binary = unpacked.path().join(path);
        let binary = binary.to_str().expect("UTF-8");
        let headers = succeeded("readelf", &["-lW", binary]);
        let dynamic = succeeded("readelf", &["-dW", binary]);
        let linked_statically = !headers.contains("INTERP") && !dynamic.contains("(NEEDED)");
        assert_eq!(
            linked_statically, is_static,
            "{path}: static {linked_statically}, expected {is_static}:\n{headers}\n{dynamic}"
        );
        // Stripped: the line tables are in the -dbgsym package.
        let sections = succeeded("readelf", &["-SW", binary]);
        assert!(
            !sections.contains(".debug_line"),
            "{path} is not stripped:\n{sections}"
        );
    }
    let version = succeeded(
        unpacked
            .path()
            .join("usr/bin/guestcomm")
            .to_str()
            .expect("UTF-8"),
        &["--version"],
    );
    assert!(version.starts_with("guestcomm "), "{version}");

    let lintian = run("lintian", &[deb_text(host), deb_text(agent)]);
    assert!(
        lintian.status.success(),
        "lintian found errors:\n{}",
        stdout(&lintian)
    );
}

/// Both packages installed; purged when dropped (a failed assertion too),
/// and the group the install made removed again.
struct Installed {
    purged: bool,
    group_was_there: bool,
}

impl Installed {
    fn purge(&mut self) -> Output {
        self.purged = true;
        run("dpkg", &["--purge", HOST, AGENT])
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged {
            let _ = self.purge();
        }
        if !self.group_was_there {
            let _ = run("groupdel", &["guestcomm"]);
        }
    }
}

/// `deb` repacked as `version` into `dir`: the same files, a newer
/// package to install over it.
fn repacked(deb: &Path, version: &str, dir: &Path) -> PathBuf {
    let name = deb.file_stem().and_then(|n| n.to_str()).expect("a name");
    let tree = dir.join(format!("{name}.tree"));
    succeeded("dpkg-deb", &["-R", deb_text(deb), deb_text(&tree)]);
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).expect("DEBIAN/control");
    let text: String = text
        .lines()
        .map(|line| match line.strip_prefix("Version: ") {
            Some(_) => format!("Version: {version}\n"),
            None => format!("{line}\n"),
        })
        .collect();
    std::fs::write(&control, text).expect("write DEBIAN/control");
    let out = dir.join(format!("{name}.{version}.deb"));
    succeeded(
        "dpkg-deb",
        &["--root-owner-group", "-b", deb_text(&tree), deb_text(&out)],
    );
    out
}

/// A process killed by PID and reaped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The installed guestcommd on `state`, with the installed configuration,
/// serving its API on `socket`, once it listens.
fn installed_daemon(state: &Path, socket: &Path) -> Running {
    let process = Running(
        Command::new("/usr/sbin/guestcommd")
            .arg("--state")
            .arg(state)
            .arg("--api")
            .arg(format!("unix://{}", socket.display()))
            .args(["--heartbeat-interval", "off"])
            .args(["--config", "/etc/guestcomm/guestcommd.toml"])
            .env("GUESTCOMM_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the installed guestcommd"),
    );
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        }),
        "the installed guestcommd did not start listening"
    );
    process
}

fn installed(package: &str) -> bool {
    stdout(&run(
        "dpkg-query",
        &["-W", "-f=${db:Status-Status}", package],
    )) == "installed"
}

/// dpkg's database is the machine's: one install at a time.
static DPKG: Mutex<()> = Mutex::new(());

#[test]
fn installed_packages_serve_render_complete_and_purge_cleanly() {
    if !tools_ready(
        "installed_packages_serve_render_complete_and_purge_cleanly",
        true,
    ) {
        return;
    }
    let _dpkg = DPKG.lock().unwrap_or_else(|e| e.into_inner());
    let (host, agent) = packages();
    assert!(
        !installed(HOST) && !installed(AGENT),
        "a guestcomm package is already installed here; this test would purge it"
    );
    let mut guard = Installed {
        purged: false,
        group_was_there: run("getent", &["group", "guestcomm"]).status.success(),
    };
    succeeded("dpkg", &["-i", deb_text(host), deb_text(agent)]);
    assert!(run("getent", &["group", "guestcomm"]).status.success());
    let state = std::fs::metadata("/var/lib/guestcomm").expect("/var/lib/guestcomm");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&state.permissions()) & 0o777,
        0o700
    );

    if has("systemd-analyze", "--version") {
        for unit in ["guestcommd.service", "guestcomm-agent.service"] {
            let path = format!("/usr/lib/systemd/system/{unit}");
            let out = run("systemd-analyze", &["verify", &path]);
            assert!(
                out.status.success(),
                "systemd-analyze verify {unit}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        assert!(
            std::env::var_os("GUESTCOMM_PACKAGES_REQUIRED").is_none(),
            "systemd-analyze missing (apt-get install systemd; .ci/run does)"
        );
        eprintln!("*** systemd-analyze missing: the units are not verified ***");
    }

    // The installed binaries, on temporary paths only (never /run/guestcomm
    // or /var/lib/guestcomm), with the installed configuration.
    let dir = tempfile::tempdir().expect("tempdir");
    let agent_socket = dir.path().join("agent.sock");
    let agent_process = Running(
        Command::new("/usr/bin/guestcomm-agent")
            .arg("--listen")
            .arg(format!("unix://{}", agent_socket.display()))
            .arg("--kvp-socket")
            .arg(dir.path().join("kvp.sock"))
            .args(["--hyperv-kvp", "off"])
            .env("GUESTCOMM_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the installed guestcomm-agent"),
    );
    let api_socket = dir.path().join("api.sock");
    let api = format!("unix://{}", api_socket.display());
    let daemon_process = installed_daemon(&dir.path().join("state"), &api_socket);
    assert!(
        wait_until(STARTUP_DEADLINE, || {
            std::os::unix::net::UnixStream::connect(&agent_socket).is_ok()
        }),
        "the installed agent did not start listening"
    );
    let endpoint = format!("unix://{}", agent_socket.display());
    let guestcomm = |args: &[&str]| {
        let mut all = vec!["--api", api.as_str()];
        all.extend_from_slice(args);
        succeeded("/usr/bin/guestcomm", &all)
    };
    guestcomm(&[
        "vm",
        "add",
        "pkg-vm",
        "--endpoint",
        &endpoint,
        "--no-credentials",
    ]);
    let list = guestcomm(&["vm", "list"]);
    assert!(list.contains("pkg-vm"), "{list}");
    let echoed = guestcomm(&["exec", "pkg-vm", "--", "echo", "from the guest"]);
    assert_eq!(echoed, "from the guest\n");

    // The man page renders (man-db's man -l reads the gzipped page).
    let page = Command::new("man")
        .args(["-l", "/usr/share/man/man1/guestcomm-exec.1.gz"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("run man");
    let page = stdout(&page);
    assert!(
        page.contains("NAME") && page.contains("guestcomm-exec"),
        "{page}"
    );
    assert!(page.contains("--tty"), "{page}");

    // bash completes the subcommands from the installed script.
    let completed = succeeded(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/guestcomm; \
             COMP_WORDS=(guestcomm ex); COMP_CWORD=1; COMP_LINE='guestcomm ex'; \
             COMP_POINT=${#COMP_LINE}; _guestcomm guestcomm ex guestcomm; \
             printf '%s\\n' \"${COMPREPLY[@]}\"",
        ],
    );
    assert_eq!(completed.trim(), "exec");

    drop(daemon_process);

    // An upgrade keeps guestcommd's state and the operator's configuration:
    // state written by the installed daemon in the package's state
    // directory, a changed conffile, then both packages again as a newer
    // version (the same files repacked) installed over them.
    let upgrade_api_socket = dir.path().join("api-upgrade.sock");
    let upgrade_api = format!("unix://{}", upgrade_api_socket.display());
    let packaged_daemon = || {
        let _ = std::fs::remove_file(&upgrade_api_socket);
        installed_daemon(Path::new("/var/lib/guestcomm"), &upgrade_api_socket)
    };
    let on_state = |args: &[&str]| {
        let mut all = vec!["--api", upgrade_api.as_str()];
        all.extend_from_slice(args);
        succeeded("/usr/bin/guestcomm", &all)
    };
    let before = packaged_daemon();
    let id = on_state(&[
        "vm",
        "add",
        "kept-vm",
        "--endpoint",
        &endpoint,
        "--no-credentials",
    ]);
    drop(before);
    let conffile = "/etc/guestcomm/guestcommd.toml";
    let mut changed = std::fs::read_to_string(conffile).expect("the conffile");
    changed.push_str("# changed by the operator\n");
    std::fs::write(conffile, &changed).expect("change the conffile");
    let newer_host = repacked(host, "99.0.0-1", dir.path());
    let newer_agent = repacked(agent, "99.0.0-1", dir.path());
    succeeded(
        "dpkg",
        &["-i", deb_text(&newer_host), deb_text(&newer_agent)],
    );
    for package in [HOST, AGENT] {
        let version = succeeded("dpkg-query", &["-W", "-f=${Version}", package]);
        assert_eq!(version, "99.0.0-1", "{package}");
    }
    assert_eq!(
        std::fs::read_to_string(conffile).expect("the conffile"),
        changed,
        "the upgrade replaced the operator's configuration"
    );
    let after = packaged_daemon();
    let list = on_state(&["vm", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("kept-vm") && l.contains(id.trim())),
        "{list}"
    );
    let echoed = on_state(&["exec", "kept-vm", "--", "echo", "after the upgrade"]);
    assert_eq!(echoed, "after the upgrade\n");
    drop(after);
    drop(agent_process);

    let purged = guard.purge();
    assert!(
        purged.status.success(),
        "dpkg --purge: {}",
        String::from_utf8_lossy(&purged.stderr)
    );
    // Debian keeps system groups on purge (files may still carry them).
    assert!(
        run("getent", &["group", "guestcomm"]).status.success(),
        "the purge removed the group"
    );
    for path in [
        "/usr/bin/guestcomm",
        "/usr/sbin/guestcommd",
        "/usr/bin/guestcomm-agent",
        "/etc/guestcomm",
        "/var/lib/guestcomm",
        "/usr/lib/systemd/system/guestcommd.service",
        "/usr/share/bash-completion/completions/guestcomm",
    ] {
        assert!(!Path::new(path).exists(), "{path} stayed after the purge");
    }
}
