//! guest-set-user-password and guest-ssh-get/add/remove-authorized-keys: a
//! user's password (through chpasswd, as qemu-ga does) and the user's
//! `~/.ssh/authorized_keys`.
//!
//! The agent runs as root in a directory the user owns, so nothing there is
//! followed: `~/.ssh` is opened without following a link and must belong to
//! the user, the keys are written to a new file in it (owned by the user,
//! mode 0600) that then replaces `authorized_keys`, and that file is read
//! without following a link. A link the user planted never makes the agent
//! read or write anything else.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};

use base64::Engine;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, mkdirat, Mode};
use nix::unistd::{fchown, User};

use super::reply::{generic, Reply};

/// Largest authorized_keys file read.
const MAX_AUTHORIZED_KEYS_BYTES: u64 = 1024 * 1024;

/// `name`'s passwd entry, or the error for a user that does not exist.
pub(super) fn user(name: &str) -> Result<User, Reply> {
    match User::from_name(name) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(generic(format!("user '{name}' does not exist"))),
        Err(e) => Err(generic(format!("cannot look up user '{name}': {e}"))),
    }
}

/// Sets `username`'s password (`password` base64; already hashed when
/// `crypted`), feeding chpasswd as qemu-ga does.
pub(super) fn set_password(username: &str, password: &str, crypted: bool) -> Reply {
    let Ok(password) = base64::engine::general_purpose::STANDARD.decode(password) else {
        return generic("Invalid parameter 'password': not base64");
    };
    let Ok(password) = String::from_utf8(password) else {
        return generic("the password is not UTF-8");
    };
    if let Err(reply) = user(username) {
        return reply;
    }
    if username.contains([':', '\n']) || password.contains(['\n', '\0']) {
        return generic("the user name or password holds a character chpasswd cannot take");
    }
    let mut cmd = Command::new("chpasswd");
    if crypted {
        cmd.arg("-e");
    }
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => return generic(format!("cannot run chpasswd: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{username}:{password}");
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => Reply::Return(serde_json::json!({})),
        Ok(out) => generic(format!(
            "child process has failed to set user password: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => generic(format!("chpasswd failed: {e}")),
    }
}

/// `~/.ssh` of `user`, opened without following a link, created (0700,
/// the user's) when `create` and missing; it must belong to the user.
fn ssh_dir(user: &User, create: bool) -> Result<Option<OwnedFd>, Reply> {
    let fail =
        |what: &str, e: Errno| generic(format!("cannot {what} for user '{}': {e}", user.name));
    let home = openat(
        AT_FDCWD,
        &user.dir,
        OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail("open the home directory", e))?;
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let dir = match openat(&home, ".ssh", flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(Errno::ENOENT) if create => {
            mkdirat(&home, ".ssh", Mode::from_bits_truncate(0o700))
                .map_err(|e| fail("create ~/.ssh", e))?;
            let dir =
                openat(&home, ".ssh", flags, Mode::empty()).map_err(|e| fail("open ~/.ssh", e))?;
            fchown(&dir, Some(user.uid), Some(user.gid)).map_err(|e| fail("chown ~/.ssh", e))?;
            dir
        }
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(fail("open ~/.ssh (a link is not followed)", e)),
    };
    let owner = fstat(&dir).map_err(|e| fail("stat ~/.ssh", e))?.st_uid;
    if owner != user.uid.as_raw() {
        return Err(generic(format!(
            "~/.ssh of user '{}' belongs to uid {owner}, not to the user: refusing to use it",
            user.name
        )));
    }
    Ok(Some(dir))
}

/// The keys in `dir`'s authorized_keys: its lines but blank ones and comments.
fn read_keys(dir: &impl AsFd, name: &str) -> Result<Vec<String>, Reply> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let file = match openat(dir, "authorized_keys", flags, Mode::empty()) {
        Ok(file) => std::fs::File::from(file),
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => {
            return Err(generic(format!(
                "cannot read ~/.ssh/authorized_keys of user '{name}' (a link is not followed): {e}"
            )))
        }
    };
    let mut text = String::new();
    file.take(MAX_AUTHORIZED_KEYS_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| generic(format!("cannot read ~/.ssh/authorized_keys: {e}")))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// Replaces `dir`'s authorized_keys with `keys` (a new file, the user's, 0600).
fn write_keys(dir: &impl AsFd, user: &User, keys: &[String]) -> Result<(), Reply> {
    let fail = |what: &str, e: Errno| generic(format!("cannot {what}: {e}"));
    let temp = format!(".authorized_keys.guestcomm-{}", std::process::id());
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match openat(dir, temp.as_str(), flags, Mode::from_bits_truncate(0o600)) {
        Err(Errno::EEXIST) => {
            // A leftover of ours (the user may also have put it there):
            // unlink it (never follow it) and start again.
            let _ =
                nix::unistd::unlinkat(dir, temp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
            openat(dir, temp.as_str(), flags, Mode::from_bits_truncate(0o600))
        }
        other => other,
    }
    .map_err(|e| fail("create a new authorized_keys", e))?;
    fchown(&fd, Some(user.uid), Some(user.gid)).map_err(|e| fail("chown authorized_keys", e))?;
    let mut file = std::fs::File::from(fd);
    let mut text = keys.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| generic(format!("cannot write authorized_keys: {e}")))?;
    renameat(dir, temp.as_str(), dir, "authorized_keys")
        .map_err(|e| fail("replace authorized_keys", e))
}

/// A key is one line of text.
fn check_keys(keys: &[String]) -> Result<(), Reply> {
    for key in keys {
        if key.trim().is_empty() || key.contains(['\n', '\r', '\0']) {
            return Err(generic(format!("invalid OpenSSH public key: {key:?}")));
        }
    }
    Ok(())
}

/// guest-ssh-get-authorized-keys.
pub(super) fn get_keys(username: &str) -> Reply {
    let result = (|| {
        let user = user(username)?;
        match ssh_dir(&user, false)? {
            Some(dir) => read_keys(&dir, username),
            None => Ok(Vec::new()),
        }
    })();
    match result {
        Ok(keys) => Reply::Return(serde_json::json!({ "keys": keys })),
        Err(reply) => reply,
    }
}

/// guest-ssh-add-authorized-keys (`reset`: the keys replace all others).
pub(super) fn add_keys(username: &str, keys: &[String], reset: bool) -> Reply {
    let result = (|| {
        check_keys(keys)?;
        let user = user(username)?;
        let dir = ssh_dir(&user, true)?.ok_or_else(|| generic("~/.ssh vanished"))?;
        let mut all = if reset {
            Vec::new()
        } else {
            read_keys(&dir, username)?
        };
        for key in keys {
            let key = key.trim().to_string();
            if !all.contains(&key) {
                all.push(key);
            }
        }
        write_keys(&dir, &user, &all)
    })();
    match result {
        Ok(()) => Reply::Return(serde_json::json!({})),
        Err(reply) => reply,
    }
}

/// guest-ssh-remove-authorized-keys.
pub(super) fn remove_keys(username: &str, keys: &[String]) -> Reply {
    let result = (|| {
        check_keys(keys)?;
        let user = user(username)?;
        let Some(dir) = ssh_dir(&user, false)? else {
            return Ok(());
        };
        let all = read_keys(&dir, username)?;
        let kept: Vec<String> = all
            .iter()
            .filter(|k| !keys.iter().any(|r| r.trim() == k.as_str()))
            .cloned()
            .collect();
        if kept.len() == all.len() {
            return Ok(());
        }
        write_keys(&dir, &user, &kept)
    })();
    match result {
        Ok(()) => Reply::Return(serde_json::json!({})),
        Err(reply) => reply,
    }
}
