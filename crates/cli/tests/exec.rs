//! `guestcomm exec` against a real `guestcomm-agent` on a Unix socket:
//! streams, exit codes, pty, concurrency, signals and disconnects.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::io::{Read, Write};
use std::process::Stdio;

use util::{pseudo_random, Agent};

#[test]
fn stdout_and_stderr_stay_apart_and_byte_exact_for_100_mb() {
    let agent = Agent::start();
    let out_data = pseudo_random(60_000_000, 1);
    let err_data = pseudo_random(40_000_000, 2);
    let out_file = agent.dir.path().join("out.bin");
    let err_file = agent.dir.path().join("err.bin");
    std::fs::write(&out_file, &out_data).unwrap();
    std::fs::write(&err_file, &err_data).unwrap();
    // Both streams written at the same time by two processes.
    let script = format!(
        "cat {} & cat {} >&2; wait",
        out_file.display(),
        err_file.display()
    );
    let output = agent.exec(&["sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(0));
    assert!(
        output.stdout == out_data,
        "stdout differs ({} bytes)",
        output.stdout.len()
    );
    assert!(
        output.stderr == err_data,
        "stderr differs ({} bytes)",
        output.stderr.len()
    );
}

#[test]
fn stdin_is_piped_through_including_end_of_file() {
    let agent = Agent::start();
    let data = pseudo_random(5_000_000, 3);
    let mut child = agent
        .exec_cmd(&[], &["sh", "-c", "cat; echo END-OF-INPUT"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn({
        let data = data.clone();
        move || stdin.write_all(&data)
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    let mut expected = data;
    expected.extend_from_slice(b"END-OF-INPUT\n");
    assert!(out == expected, "output differs ({} bytes)", out.len());
}

#[test]
fn stdout_into_a_file_is_byte_exact_and_stdin_from_dev_null_reads_end_of_file() {
    let agent = Agent::start();
    let data = pseudo_random(20_000_000, 4);
    let src = agent.dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let out = agent.dir.path().join("out.bin");
    // The file written in place, /dev/null forwarding nothing: `cat` of
    // stdin adds no byte and ends.
    let status = agent
        .exec_cmd(&[], &["sh", "-c", &format!("cat {}; cat", src.display())])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let written = std::fs::read(&out).unwrap();
    assert!(
        written == data,
        "the file differs ({} bytes)",
        written.len()
    );
}

#[test]
fn without_stdin_data_the_command_still_reads_end_of_file_from_a_pipe() {
    let agent = Agent::start();
    // The host sends only `eof` for stdin: the agent closes a pipe it never
    // wrote to, and the command sees a pipe that ends.
    let out = agent
        .exec_cmd(
            &[],
            &["sh", "-c", "test -p /dev/stdin && cat && echo ended"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"ended\n");
}

#[test]
fn output_around_the_first_read_size_stays_byte_exact() {
    let agent = Agent::start();
    // The agent's first read of a stream is 16 KiB; one that fills it
    // moves the stream to whole chunks.
    for size in [16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 300 * 1024] {
        let data = pseudo_random(size, 5);
        let src = agent.dir.path().join("src.bin");
        std::fs::write(&src, &data).unwrap();
        let script = format!("cat {0}; cat {0} >&2", src.display());
        let out = agent.exec(&["sh", "-c", &script]);
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout == data, "stdout of {size} bytes differs");
        assert!(out.stderr == data, "stderr of {size} bytes differs");
    }
}

#[test]
fn exit_codes_are_propagated() {
    let agent = Agent::start();
    for code in [0, 1, 7] {
        let out = agent.exec(&["sh", "-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code));
    }
    let killed = agent.exec(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(killed.status.code(), Some(128 + 15));
}

#[test]
fn each_command_leads_a_process_group_of_its_own() {
    let agent = Agent::start();
    // Field 5 of /proc/PID/stat is the process group; the agent starts
    // commands without a pre-exec step (posix_spawn) and still puts each
    // in a group of its own, so timeouts and disconnects reach everything
    // it started.
    let out = agent.exec(&["sh", "-c", "echo $$; cut -d' ' -f5 /proc/$$/stat"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], lines[1], "not its own process group: {text}");
}

#[test]
fn missing_command_exits_127_with_a_clear_message() {
    let agent = Agent::start();
    let out = agent.exec(&["no-such-command-guestcomm"]);
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-command-guestcomm: command not found"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn missing_working_directory_exits_126_naming_it() {
    let agent = Agent::start();
    let out = agent
        .exec_cmd(&["-w", "/no/such/dir"], &["pwd"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(126));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/no/such/dir") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn environment_and_working_directory_reach_the_command() {
    let agent = Agent::start();
    let out = agent
        .exec_cmd(
            &["-e", "GREETING=hello there", "-w", "/tmp"],
            &["sh", "-c", "echo \"$GREETING\"; pwd"],
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello there\n/tmp\n");
}

#[test]
fn pty_mode_gives_the_command_a_terminal() {
    let agent = Agent::start();
    let out = agent
        .exec_cmd(&["-t"], &["tty"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim().starts_with("/dev/pts/"), "{text}");
    let piped = agent.exec(&["tty"]);
    assert_ne!(
        piped.status.code(),
        Some(0),
        "without -t there is no terminal"
    );
}

#[test]
fn fifty_concurrent_execs_each_get_their_own_output() {
    let agent = Agent::start();
    let children: Vec<_> = (0..50)
        .map(|i| {
            agent
                .exec_cmd(
                    &[],
                    &[
                        "sh",
                        "-c",
                        &format!("sleep 0.2; echo job-{i}; exit {}", i % 5),
                    ],
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("job-{i}\n"));
        assert_eq!(out.status.code(), Some((i % 5) as i32));
    }
}

#[test]
fn timeout_kills_the_command() {
    let agent = Agent::start();
    let out = agent
        .exec_cmd(&["--timeout", "1"], &["sleep", "600"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
}

/// Starts a guest command that records its pid and prints `ready`.
fn start_guest_loop(agent: &Agent, pidfile: &std::path::Path, trap: &str) -> std::process::Child {
    let script = util::guest_loop_script(pidfile, trap);
    util::spawn_until_ready(agent.exec_cmd(&[], &["sh", "-c", &script]))
}

#[test]
fn ctrl_c_is_forwarded_to_the_guest_process() {
    let agent = Agent::start();
    let pidfile = agent.dir.path().join("pid");
    let child = start_guest_loop(&agent, &pidfile, "trap 'exit 42' INT;");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn host_disconnect_kills_the_guest_process() {
    let mut agent = Agent::start();
    let pidfile = agent.dir.path().join("pid");
    let child = start_guest_loop(&agent, &pidfile, "");
    util::kill_caller_and_expect_guest_gone(child, &pidfile);
    assert!(agent.is_running(), "the agent must keep running");
    assert_eq!(agent.exec(&["true"]).status.code(), Some(0));
}

#[test]
fn vm_names_without_a_daemon_get_a_clear_error() {
    let out = std::process::Command::new(util::bin("guestcomm"))
        .args(["exec", "web1", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("guestcommd"));
}

#[test]
fn unreachable_agent_exits_125_naming_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("unix://{}/nobody.sock", dir.path().display());
    let out = std::process::Command::new(util::bin("guestcomm"))
        .args(["exec", &addr, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody.sock"));
}

#[test]
fn user_option_runs_the_command_as_that_user() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIPPED user_option_runs_the_command_as_that_user: switching users needs root");
        return;
    }
    let agent = Agent::start();
    let out = agent
        .exec_cmd(&["-u", "nobody"], &["sh", "-c", "id -u; echo $USER"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\nnobody\n", nobody.uid)
    );
    let missing = agent
        .exec_cmd(&["-u", "no-such-user-guestcomm"], &["true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user \"no-such-user-guestcomm\""));
}
