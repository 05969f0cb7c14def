//! `guestcomm vm credentials`: every form that delivers a VM's key to its
//! guest (a file, QEMU options, libvirt XML, cloud-init), each carrying the
//! key guestcommd holds for the VM; the forms that do not fit together and
//! the kernel command line refused before anything is written.

// Helpers here are test code too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};

use base64::Engine;
use guestcomm_protocol::auth::{load_credentials, parse_credentials};
use util::daemon::Daemon;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A daemon with VM `web1` (vsock endpoint: a key is generated), and the
/// key it holds, as the plain `--guest-file` form writes it.
fn daemon_with_keyed_vm() -> (Daemon, String) {
    let d = Daemon::start("off");
    d.ok(&[
        "vm",
        "add",
        "web1",
        "--endpoint",
        "hvsock-uds:///run/web1.vsock?port=18243",
    ]);
    let plain = d.dir.path().join("plain.key");
    d.ok(&[
        "vm",
        "credentials",
        "web1",
        "--guest-file",
        plain.to_str().unwrap(),
    ]);
    let key = load_credentials(&plain).unwrap().secret_hex();
    (d, key)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The key in an SMBIOS OEM string or a cloud-init `content:` value.
fn key_of_base64(encoded: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap();
    parse_credentials(&text(&bytes), "test")
        .unwrap()
        .secret_hex()
}

fn usage_error(out: &Output, says: &str) {
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
}

#[test]
fn qemu_options_deliver_the_vms_key_by_fw_cfg_or_smbios() {
    let (d, key) = daemon_with_keyed_vm();

    // fw_cfg: the credentials file, 0600, and the option naming it.
    let file = d.dir.path().join("web1.key");
    let out = d.ok(&[
        "vm",
        "credentials",
        "web1",
        "--qemu-args",
        "--guest-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        out,
        format!(
            "-fw_cfg name=opt/io.systemd.credentials/guestcomm.key,file={}\n",
            file.display()
        )
    );
    assert_eq!(mode(&file), 0o600);
    assert_eq!(load_credentials(&file).unwrap().secret_hex(), key);

    // SMBIOS from a file: the OEM string in it, the key off the command line.
    let oem = d.dir.path().join("web1.oem");
    let out = d.ok(&[
        "vm",
        "credentials",
        "web1",
        "--qemu-args",
        "--smbios",
        "--guest-file",
        oem.to_str().unwrap(),
    ]);
    assert_eq!(out, format!("-smbios type=11,path={}\n", oem.display()));
    assert_eq!(mode(&oem), 0o600);
    let written = std::fs::read_to_string(&oem).unwrap();
    let encoded = written
        .strip_prefix("io.systemd.credential.binary:guestcomm.key=")
        .unwrap();
    assert_eq!(key_of_base64(encoded), key);

    // SMBIOS inline: the same string on the command line, with a caution.
    let out = d.run(&["vm", "credentials", "web1", "--qemu-args", "--smbios"]);
    assert!(out.status.success(), "{out:?}");
    let line = text(&out.stdout);
    let encoded = line
        .trim()
        .strip_prefix("-smbios type=11,value=io.systemd.credential.binary:guestcomm.key=")
        .unwrap();
    assert_eq!(key_of_base64(encoded), key);
    assert!(
        text(&out.stderr).contains("every user of this host can read"),
        "{}",
        text(&out.stderr)
    );

    // A relative --guest-file is printed absolute (QEMU runs elsewhere).
    let out = d
        .cli(&[
            "vm",
            "credentials",
            "web1",
            "--qemu-args",
            "--guest-file",
            "relative.key",
        ])
        .current_dir(d.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).ends_with(&format!(
            ",file={}\n",
            d.dir.path().join("relative.key").display()
        )),
        "{}",
        text(&out.stdout)
    );

    // An existing file is never written over.
    let again = d.run(&[
        "vm",
        "credentials",
        "web1",
        "--qemu-args",
        "--guest-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1), "{again:?}");
    assert!(again.stdout.is_empty());
    assert!(text(&again.stderr).contains("File exists"), "{again:?}");
}

#[test]
fn libvirt_and_cloud_init_forms_carry_the_vms_key() {
    let (d, key) = daemon_with_keyed_vm();

    let file = d.dir.path().join("libvirt.key");
    let xml = d.ok(&[
        "vm",
        "credentials",
        "web1",
        "--libvirt-xml",
        "--guest-file",
        file.to_str().unwrap(),
    ]);
    assert!(xml.starts_with("<sysinfo type='fwcfg'>\n"), "{xml}");
    assert!(
        xml.contains(&format!(
            "<entry name='opt/io.systemd.credentials/guestcomm.key' file='{}'/>",
            file.display()
        )),
        "{xml}"
    );
    assert_eq!(load_credentials(&file).unwrap().secret_hex(), key);

    let out = d.run(&["vm", "credentials", "web1", "--libvirt-xml", "--smbios"]);
    assert!(out.status.success(), "{out:?}");
    let xml = text(&out.stdout);
    let encoded = xml
        .split("<entry>io.systemd.credential.binary:guestcomm.key=")
        .nth(1)
        .and_then(|rest| rest.split("</entry>").next())
        .unwrap();
    assert_eq!(key_of_base64(encoded), key);
    assert!(xml.contains("<smbios mode='sysinfo'/>"), "{xml}");
    assert!(text(&out.stderr).contains("domain's XML"), "{out:?}");

    let out = d.run(&["vm", "credentials", "web1", "--cloud-init"]);
    assert!(out.status.success(), "{out:?}");
    let doc = text(&out.stdout);
    assert!(doc.starts_with("#cloud-config\n"), "{doc}");
    assert!(
        doc.contains("- path: /etc/credstore/guestcomm.key\n"),
        "{doc}"
    );
    assert!(doc.contains("permissions: '0600'\n"), "{doc}");
    let encoded = doc
        .lines()
        .find_map(|l| l.trim().strip_prefix("content: "))
        .unwrap();
    assert_eq!(key_of_base64(encoded), key);
    assert!(text(&out.stderr).contains("user data"), "{out:?}");
}

#[test]
fn forms_that_do_not_fit_and_the_kernel_command_line_are_refused_before_anything_is_written() {
    let d = Daemon::start("off");
    let file = d.dir.path().join("never.key");
    let f = file.to_str().unwrap();
    // Refused without asking the daemon: the VM need not even exist.
    let out = d.run(&["vm", "credentials", "nosuch", "--kernel-cmdline"]);
    usage_error(&out, "/proc/cmdline");
    let out = d.run(&["vm", "credentials", "nosuch", "--qemu-args"]);
    usage_error(&out, "give --guest-file PATH");
    let out = d.run(&["vm", "credentials", "nosuch", "--smbios", "--guest-file", f]);
    usage_error(&out, "--smbios goes with --qemu-args or --libvirt-xml");
    let out = d.run(&[
        "vm",
        "credentials",
        "nosuch",
        "--libvirt-xml",
        "--smbios",
        "--guest-file",
        f,
    ]);
    usage_error(&out, "drop --guest-file");
    let out = d.run(&[
        "vm",
        "credentials",
        "nosuch",
        "--cloud-init",
        "--guest-file",
        f,
    ]);
    usage_error(&out, "drop --guest-file");
    let out = d.run(&["vm", "credentials", "nosuch"]);
    usage_error(&out, "say where the key goes");
    let out = d.run(&["vm", "credentials", "nosuch", "--qemu-args", "--cloud-init"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!file.exists());
    // A VM without a key has none to deliver; an unknown VM is named.
    let out = d.run(&["vm", "credentials", "nosuch", "--cloud-init"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(text(&out.stderr).contains("nosuch"), "{out:?}");
}

#[test]
fn vm_add_delivers_the_new_key_in_one_step_and_says_how_when_not_asked() {
    let d = Daemon::start("off");

    // With a delivery form: the id, then the line for QEMU; the file holds
    // the key the daemon keeps for the VM.
    let file = d.dir.path().join("web2.key");
    let out = d.run(&[
        "vm",
        "add",
        "web2",
        "--endpoint",
        "hvsock-uds:///run/web7.vsock?port=18243",
        "--qemu-args",
        "--guest-file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    let show = d.ok(&["vm", "show", "web2"]);
    assert!(
        show.contains(&format!("ID:         {}\n", lines[0])),
        "{show}"
    );
    assert_eq!(
        lines[1],
        format!(
            "-fw_cfg name=opt/io.systemd.credentials/guestcomm.key,file={}",
            file.display()
        )
    );
    assert_eq!(mode(&file), 0o600);
    let plain = d.dir.path().join("web2.plain");
    d.ok(&[
        "vm",
        "credentials",
        "web2",
        "--guest-file",
        plain.to_str().unwrap(),
    ]);
    assert_eq!(
        load_credentials(&file).unwrap().secret_hex(),
        load_credentials(&plain).unwrap().secret_hex()
    );

    // Without one: only the id on stdout, and how to deliver on stderr.
    let out = d.run(&[
        "vm",
        "add",
        "web3",
        "--endpoint",
        "hvsock-uds:///run/web8.vsock?port=18243",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout).lines().count(), 1, "{out:?}");
    assert!(
        text(&out.stderr).contains("guestcomm vm credentials web3 --qemu-args"),
        "{out:?}"
    );

    // Forms that do not fit are refused before the VM is added.
    let out = d.run(&[
        "vm",
        "add",
        "web4",
        "--endpoint",
        "hvsock-uds:///run/web9.vsock?port=18243",
        "--smbios",
    ]);
    usage_error(&out, "--smbios goes with --qemu-args or --libvirt-xml");
    let out = d.run(&[
        "vm",
        "add",
        "web5",
        "--endpoint",
        "unix:///run/web5.sock",
        "--no-credentials",
        "--cloud-init",
    ]);
    usage_error(&out, "no key to deliver");
    let list = d.ok(&["vm", "list"]);
    assert!(!list.contains("web4") && !list.contains("web5"), "{list}");
}
