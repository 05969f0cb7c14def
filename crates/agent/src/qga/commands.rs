//! QGA commands (QEMU's qga/qapi-schema.json), answered by the agent's own
//! services: the same clock, freeze manager, shutdown runner, guest
//! information and guest policy as the native protocol, so a request the
//! guest owner's `--policy` refuses natively is refused here too.
//!
//! Errors carry QGA's classes: `CommandNotFound` for a command this agent
//! does not have (or `--qga-block-rpcs` disabled), `GenericError` for the
//! rest, with qemu-ga's wording for malformed input.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use guestcomm_protocol::integration::ShutdownRequest;
use guestcomm_protocol::{Call, Control, ErrorFrame, ExecRequest, Request};
use serde_json::{json, Map, Value};

use super::accounts;
use super::cpus;
use super::exec::Execs;
use super::files::Files;
use super::fsinfo::fsinfo as filesystems;
use super::reply::{arg, generic, opt, tri, Args, Reply};
use super::storage;
use crate::integration::{answer, Origin, Services};

type Handler = fn(&Qga, &Args) -> Reply;

/// Every command: name, parameters, handler.
const COMMANDS: &[(&str, &[&str], Handler)] = &[
    ("guest-sync-delimited", &["id"], sync),
    ("guest-sync", &["id"], sync),
    ("guest-ping", &[], |_, _| Reply::Return(json!({}))),
    ("guest-info", &[], info),
    ("guest-get-time", &[], get_time),
    ("guest-set-time", &["time"], set_time),
    ("guest-get-osinfo", &[], osinfo),
    ("guest-get-host-name", &[], host_name),
    ("guest-get-users", &[], users),
    ("guest-get-timezone", &[], timezone),
    ("guest-get-fsinfo", &[], fsinfo),
    ("guest-get-disks", &[], |_, _| storage::disks()),
    ("guest-fstrim", &["minimum"], fstrim),
    ("guest-get-load", &[], |_, _| cpus::load()),
    ("guest-get-vcpus", &[], |_, _| cpus::vcpus()),
    ("guest-network-get-interfaces", &[], interfaces),
    ("guest-fsfreeze-status", &[], freeze_status),
    ("guest-fsfreeze-freeze", &[], freeze),
    ("guest-fsfreeze-freeze-list", &["mountpoints"], freeze),
    ("guest-fsfreeze-thaw", &[], thaw),
    ("guest-shutdown", &["mode"], shutdown),
    (
        "guest-exec",
        &["path", "arg", "env", "input-data", "capture-output"],
        exec,
    ),
    ("guest-exec-status", &["pid"], exec_status),
    ("guest-file-open", &["path", "mode"], file_open),
    ("guest-file-close", &["handle"], file_close),
    ("guest-file-read", &["handle", "count"], file_read),
    (
        "guest-file-write",
        &["handle", "buf-b64", "count"],
        file_write,
    ),
    (
        "guest-file-seek",
        &["handle", "offset", "whence"],
        file_seek,
    ),
    ("guest-file-flush", &["handle"], file_flush),
    (
        "guest-set-user-password",
        &["username", "password", "crypted"],
        set_user_password,
    ),
    ("guest-ssh-get-authorized-keys", &["username"], ssh_get),
    (
        "guest-ssh-add-authorized-keys",
        &["username", "keys", "reset"],
        ssh_add,
    ),
    (
        "guest-ssh-remove-authorized-keys",
        &["username", "keys"],
        ssh_remove,
    ),
];

/// Which commands run: all but `block`, or only `allow` when given (as
/// qemu-ga's `--allow-rpcs` and `--block-rpcs`).
#[derive(Clone, Debug, Default)]
pub struct Rpcs {
    /// Only these (`None`: all).
    pub allow: Option<Vec<String>>,
    /// Never these.
    pub block: Vec<String>,
}

impl Rpcs {
    fn enabled(&self, name: &str) -> bool {
        // guest-sync and guest-info stay: a client cannot talk without them.
        if matches!(name, "guest-sync" | "guest-sync-delimited" | "guest-info") {
            return true;
        }
        !self.block.iter().any(|b| b == name)
            && self
                .allow
                .as_ref()
                .is_none_or(|a| a.iter().any(|x| x == name))
    }
}

/// The QGA side of one agent: its services and the state of guest-exec and
/// guest-file-* (shared by every connection, as in qemu-ga).
pub struct Qga {
    services: Arc<Services>,
    rpcs: Rpcs,
    pub(super) files: Files,
    pub(super) execs: Execs,
}

impl Qga {
    /// QGA over `services`, with `rpcs` enabled.
    pub fn new(services: Arc<Services>, rpcs: Rpcs) -> Self {
        Self {
            services,
            rpcs,
            files: Files::default(),
            execs: Execs::default(),
        }
    }

    /// The reply to one request, and whether it is guest-sync-delimited
    /// (whose answer starts with the 0xFF byte).
    pub(crate) fn execute(&self, request: Value) -> (Reply, bool) {
        let Value::Object(request) = request else {
            return (generic("QMP input must be a JSON object"), false);
        };
        if let Some(unexpected) = request
            .keys()
            .find(|k| !matches!(k.as_str(), "execute" | "arguments" | "id"))
        {
            return (
                generic(format!("QMP input member '{unexpected}' is unexpected")),
                false,
            );
        }
        let name = match request.get("execute") {
            Some(Value::String(name)) => name.as_str(),
            Some(_) => {
                return (
                    generic("QMP input member 'execute' must be a string"),
                    false,
                )
            }
            None => return (generic("QMP input lacks member 'execute'"), false),
        };
        let empty = Map::new();
        let args = match request.get("arguments") {
            None => &empty,
            Some(Value::Object(args)) => args,
            Some(_) => {
                return (
                    generic("QMP input member 'arguments' must be an object"),
                    false,
                )
            }
        };
        let Some((_, params, handler)) = COMMANDS.iter().find(|(n, ..)| *n == name) else {
            return (
                Reply::Error(
                    "CommandNotFound",
                    format!("The command {name} has not been found"),
                ),
                false,
            );
        };
        if !self.rpcs.enabled(name) {
            return (
                Reply::Error(
                    "CommandNotFound",
                    format!("The command {name} has been disabled for this instance"),
                ),
                false,
            );
        }
        if let Some(unexpected) = args.keys().find(|k| !params.contains(&k.as_str())) {
            return (
                generic(format!("Parameter '{unexpected}' is unexpected")),
                false,
            );
        }
        (handler(self, args), name == "guest-sync-delimited")
    }

    /// Runs a native `call` as the host would send it: the guest policy
    /// first, then the integration service that owns it.
    fn native(&self, call: Call) -> Result<Control, Reply> {
        let mut request = Request::new(call);
        if let Some(policy) = &self.services.policy {
            crate::policy::check(policy, &mut request).map_err(refused)?;
        }
        answer(
            &self.services,
            Origin::Host,
            request.call.service(),
            request.call,
        )
        .map_err(refused)
    }

    /// The guest policy's verdict on `call`, for commands done here.
    pub(super) fn allowed(&self, call: Call) -> Result<Call, Reply> {
        let mut request = Request::new(call);
        if let Some(policy) = &self.services.policy {
            crate::policy::check(policy, &mut request).map_err(refused)?;
        }
        Ok(request.call)
    }
}

fn refused(e: ErrorFrame) -> Reply {
    generic(e.message)
}

fn sync(_: &Qga, args: &Args) -> Reply {
    let id: i64 = tri!(arg(args, "id", "integer"));
    Reply::Return(json!(id))
}

fn info(q: &Qga, _: &Args) -> Reply {
    let commands: Vec<Value> = COMMANDS
        .iter()
        .map(|(name, ..)| {
            json!({
                "name": name,
                "enabled": q.rpcs.enabled(name),
                "success-response": *name != "guest-shutdown",
            })
        })
        .collect();
    Reply::Return(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "supported_commands": commands,
    }))
}

fn get_time(q: &Qga, _: &Args) -> Reply {
    match q.native(Call::TimeQuery) {
        Ok(Control::TimeSample { guest_unix_ns }) => Reply::Return(json!(guest_unix_ns)),
        Ok(other) => unexpected(&other),
        Err(reply) => reply,
    }
}

fn set_time(q: &Qga, args: &Args) -> Reply {
    let Some(time): Option<i64> = tri!(opt(args, "time", "integer")) else {
        return generic("this feature or command is not currently supported");
    };
    let now = match q.native(Call::TimeQuery) {
        Ok(Control::TimeSample { guest_unix_ns }) => guest_unix_ns,
        Ok(other) => return unexpected(&other),
        Err(reply) => return reply,
    };
    match q.native(Call::TimeStep {
        delta_ns: time.saturating_sub(now),
    }) {
        Ok(_) => Reply::Return(json!({})),
        Err(reply) => reply,
    }
}

fn unexpected(answer: &Control) -> Reply {
    generic(format!(
        "unexpected answer from the agent: {}",
        answer.kind()
    ))
}

/// The guest's facts (`guest_info`), through the policy like any request.
fn guest_info(q: &Qga) -> Result<guestcomm_protocol::integration::GuestInfo, Reply> {
    match q.native(Call::GuestInfo)? {
        Control::GuestInfo(info) => Ok(*info),
        other => Err(unexpected(&other)),
    }
}

fn osinfo(q: &Qga, _: &Args) -> Reply {
    let info = tri!(guest_info(q));
    let mut out = Map::new();
    let mut put = |key: &str, value: &str| {
        if !value.is_empty() {
            out.insert(key.into(), json!(value));
        }
    };
    put("kernel-release", &info.kernel.release);
    put("kernel-version", &info.kernel.version);
    put("machine", &info.kernel.machine);
    put("id", &info.os.id);
    put("name", &info.os.name);
    put("pretty-name", &info.os.pretty_name);
    put("version", &info.os.version);
    put("version-id", &info.os.version_id);
    put("variant", &info.os.variant);
    put("variant-id", &info.os.variant_id);
    Reply::Return(Value::Object(out))
}

fn host_name(q: &Qga, _: &Args) -> Reply {
    let info = tri!(guest_info(q));
    Reply::Return(json!({ "host-name": info.hostname }))
}

fn users(q: &Qga, _: &Args) -> Reply {
    let info = tri!(guest_info(q));
    // One entry per user, at its first login (as qemu-ga does).
    let mut first: BTreeMap<String, i64> = BTreeMap::new();
    for session in info.users.unwrap_or_default() {
        let at = first.entry(session.user).or_insert(session.login_time_s);
        *at = (*at).min(session.login_time_s);
    }
    let users: Vec<Value> = first
        .into_iter()
        .map(|(user, at)| json!({ "user": user, "login-time": at as f64 }))
        .collect();
    Reply::Return(json!(users))
}

fn timezone(_: &Qga, _: &Args) -> Reply {
    match local_zone() {
        Some((zone, offset)) => Reply::Return(json!({ "zone": zone, "offset": offset })),
        None => generic("cannot read the local time zone"),
    }
}

/// The local time zone's abbreviation and its offset from UTC in seconds,
/// as localtime(3) sees them now.
fn local_zone() -> Option<(String, i64)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let now = libc::time_t::try_from(now).ok()?;
    // SAFETY: localtime_r writes only into `tm`, which lives on this stack;
    // `tm_zone` then points into the C library's static zone names.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&now, &mut tm) }.is_null() || tm.tm_zone.is_null() {
        return None;
    }
    // SAFETY: tm_zone is a NUL-terminated string kept by the C library.
    let zone = unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
        .to_string_lossy()
        .into_owned();
    Some((zone, tm.tm_gmtoff))
}

/// guest-fstrim: refused while frozen (a trim would wait for the thaw).
fn fstrim(q: &Qga, args: &Args) -> Reply {
    let minimum: Option<u64> = tri!(opt(args, "minimum", "integer"));
    match q.native(Call::FsStatus) {
        Ok(Control::FsFreezeStatus(s)) if !s.frozen.is_empty() => generic(
            "guest-fstrim: the filesystems are frozen; thaw them first (guest-fsfreeze-thaw)",
        ),
        Ok(_) => storage::fstrim(minimum.unwrap_or(0)),
        Err(reply) => reply,
    }
}

/// Each interface's counters from /proc/net/dev, as qemu-ga reports them.
fn interface_statistics() -> BTreeMap<String, Value> {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(|c| c.parse().unwrap_or(0))
                .collect();
            if n.len() < 12 {
                return None;
            }
            Some((
                name.trim().to_string(),
                json!({
                    "rx-bytes": n[0], "rx-packets": n[1], "rx-errs": n[2], "rx-dropped": n[3],
                    "tx-bytes": n[8], "tx-packets": n[9], "tx-errs": n[10], "tx-dropped": n[11],
                }),
            ))
        })
        .collect()
}

/// Each interface's link-layer address, all-zero ones kept: qemu-ga gives
/// the loopback's `00:00:00:00:00:00` (SIOCGIFHWADDR), where the native
/// guest information leaves a zero address out.
fn hardware_addresses() -> BTreeMap<String, String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return BTreeMap::new();
    };
    addrs
        .filter_map(|ifa| {
            let mac = ifa.address?.as_link_addr()?.addr()?;
            Some((ifa.interface_name, crate::info::mac_text(&mac)))
        })
        .collect()
}

fn interfaces(q: &Qga, _: &Args) -> Reply {
    let info = tri!(guest_info(q));
    let mut statistics = interface_statistics();
    let hardware = hardware_addresses();
    let list: Vec<Value> = info
        .interfaces
        .iter()
        .map(|i| {
            let addresses: Vec<Value> = i
                .addresses
                .iter()
                .map(|a| {
                    let (ip, prefix) = a.split_once('/').unwrap_or((a, ""));
                    let kind = if ip.contains(':') { "ipv6" } else { "ipv4" };
                    json!({
                        "ip-address-type": kind,
                        "ip-address": ip,
                        "prefix": prefix.parse::<u32>().unwrap_or(if kind == "ipv6" { 128 } else { 32 }),
                    })
                })
                .collect();
            let mut iface = json!({ "name": i.name });
            if let Some(mac) = i.mac.as_ref().or_else(|| hardware.get(&i.name)) {
                iface["hardware-address"] = json!(mac);
            }
            // As qemu-ga: addresses and counters only for an interface with an address.
            if !addresses.is_empty() {
                iface["ip-addresses"] = json!(addresses);
                if let Some(counters) = statistics.remove(&i.name) {
                    iface["statistics"] = counters;
                }
            }
            iface
        })
        .collect();
    Reply::Return(json!(list))
}

fn freeze_status(q: &Qga, _: &Args) -> Reply {
    match q.native(Call::FsStatus) {
        Ok(Control::FsFreezeStatus(s)) => Reply::Return(json!(if s.frozen.is_empty() {
            "thawed"
        } else {
            "frozen"
        })),
        Ok(other) => unexpected(&other),
        Err(reply) => reply,
    }
}

fn freeze(q: &Qga, args: &Args) -> Reply {
    let mountpoints: Vec<String> =
        tri!(opt(args, "mountpoints", "array of strings")).unwrap_or_default();
    match q.native(Call::FsFreeze {
        mountpoints,
        timeout_s: None,
    }) {
        Ok(Control::FsFreezeStatus(s)) => Reply::Return(json!(s.frozen.len())),
        Ok(other) => unexpected(&other),
        Err(reply) => reply,
    }
}

fn thaw(q: &Qga, _: &Args) -> Reply {
    match q.native(Call::FsThaw {
        mountpoints: Vec::new(),
    }) {
        Ok(Control::FsFreezeStatus(s)) => Reply::Return(json!(s.thawed.len())),
        Ok(other) => unexpected(&other),
        Err(reply) => reply,
    }
}

fn shutdown(q: &Qga, args: &Args) -> Reply {
    let mode: Option<String> = tri!(opt(args, "mode", "string"));
    let reboot = match mode.as_deref() {
        None | Some("powerdown" | "halt") => false,
        Some("reboot") => true,
        Some(_) => return generic("Invalid parameter 'mode'"),
    };
    let req = ShutdownRequest {
        reboot,
        force: false,
        reason: "guest-shutdown (QEMU guest agent protocol)".into(),
    };
    match q.native(Call::Shutdown(req.clone())) {
        Ok(_) => Reply::Shutdown(req),
        Err(reply) => reply,
    }
}

fn exec(q: &Qga, args: &Args) -> Reply {
    let path: String = tri!(arg(args, "path", "string"));
    let argv: Vec<String> = tri!(opt(args, "arg", "array of strings")).unwrap_or_default();
    let env_list: Vec<String> = tri!(opt(args, "env", "array of strings")).unwrap_or_default();
    let input: Option<String> = tri!(opt(args, "input-data", "string"));
    let capture = match args.get("capture-output") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        // qemu 8.1's modes: "none", "stdout", "stderr", "separated", "merged".
        Some(Value::String(mode)) => mode != "none",
        Some(_) => {
            return generic("Invalid parameter type for 'capture-output', expected: boolean")
        }
    };
    let input = match input
        .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
        .transpose()
    {
        Ok(input) => input,
        Err(_) => return generic("Invalid parameter 'input-data': not base64"),
    };
    let mut env = BTreeMap::new();
    for pair in env_list {
        match pair.split_once('=') {
            Some((k, v)) => {
                env.insert(k.to_string(), v.to_string());
            }
            None => return generic(format!("Invalid parameter 'env': {pair:?} has no '='")),
        }
    }
    let call = tri!(q.allowed(Call::Exec(ExecRequest {
        program: path,
        args: argv,
        env,
        ..Default::default()
    })));
    let Call::Exec(req) = call else {
        return generic("the guest policy changed the request's kind");
    };
    q.execs.start(req, input, capture)
}

fn exec_status(q: &Qga, args: &Args) -> Reply {
    let pid: i64 = tri!(arg(args, "pid", "integer"));
    q.execs.status(pid)
}

fn file_open(q: &Qga, args: &Args) -> Reply {
    let path: String = tri!(arg(args, "path", "string"));
    let mode: String = tri!(opt(args, "mode", "string")).unwrap_or_else(|| "r".into());
    q.files.open(|call| q.allowed(call).map(drop), &path, &mode)
}

fn file_close(q: &Qga, args: &Args) -> Reply {
    let handle: i64 = tri!(arg(args, "handle", "integer"));
    q.files.close(handle)
}

fn file_read(q: &Qga, args: &Args) -> Reply {
    let handle: i64 = tri!(arg(args, "handle", "integer"));
    let count: i64 = tri!(opt(args, "count", "integer")).unwrap_or(4096);
    q.files.read(handle, count)
}

fn file_write(q: &Qga, args: &Args) -> Reply {
    let handle: i64 = tri!(arg(args, "handle", "integer"));
    let data: String = tri!(arg(args, "buf-b64", "string"));
    let count: Option<i64> = tri!(opt(args, "count", "integer"));
    q.files.write(handle, &data, count)
}

fn file_seek(q: &Qga, args: &Args) -> Reply {
    let handle: i64 = tri!(arg(args, "handle", "integer"));
    let offset: i64 = tri!(arg(args, "offset", "integer"));
    let whence = match args.get("whence") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => match s.as_str() {
            "set" => Some(0),
            "cur" => Some(1),
            "end" => Some(2),
            _ => None,
        },
        None => return generic("Parameter 'whence' is missing"),
        Some(_) => None,
    };
    let Some(whence) = whence else {
        return generic("Invalid parameter 'whence'");
    };
    q.files.seek(handle, offset, whence)
}

fn file_flush(q: &Qga, args: &Args) -> Reply {
    let handle: i64 = tri!(arg(args, "handle", "integer"));
    q.files.flush(handle)
}

fn set_user_password(q: &Qga, args: &Args) -> Reply {
    let username: String = tri!(arg(args, "username", "string"));
    let password: String = tri!(arg(args, "password", "string"));
    let crypted: bool = tri!(arg(args, "crypted", "boolean"));
    // To the guest policy this is running chpasswd.
    tri!(q.allowed(Call::Exec(ExecRequest {
        program: "chpasswd".into(),
        args: if crypted {
            vec!["-e".into()]
        } else {
            Vec::new()
        },
        ..Default::default()
    })));
    accounts::set_password(&username, &password, crypted)
}

/// The guest policy's verdict on touching `username`'s authorized_keys,
/// seen as a copy out of the guest (`write` false) or into it.
fn keys_allowed(q: &Qga, username: &str, write: bool) -> Result<(), Reply> {
    let home = accounts::user(username)?.dir;
    let path = home.join(".ssh/authorized_keys").display().to_string();
    let call = if write {
        Call::CopyToGuest(guestcomm_protocol::files::CopyToGuest {
            dst: path,
            ..Default::default()
        })
    } else {
        Call::CopyFromGuest(guestcomm_protocol::files::CopyFromGuest {
            src: path,
            ..Default::default()
        })
    };
    q.allowed(call).map(drop)
}

fn ssh_get(q: &Qga, args: &Args) -> Reply {
    let username: String = tri!(arg(args, "username", "string"));
    tri!(keys_allowed(q, &username, false));
    accounts::get_keys(&username)
}

fn ssh_add(q: &Qga, args: &Args) -> Reply {
    let username: String = tri!(arg(args, "username", "string"));
    let keys: Vec<String> = tri!(arg(args, "keys", "array of strings"));
    let reset: bool = tri!(opt(args, "reset", "boolean")).unwrap_or(false);
    tri!(keys_allowed(q, &username, true));
    accounts::add_keys(&username, &keys, reset)
}

fn ssh_remove(q: &Qga, args: &Args) -> Reply {
    let username: String = tri!(arg(args, "username", "string"));
    let keys: Vec<String> = tri!(arg(args, "keys", "array of strings"));
    tri!(keys_allowed(q, &username, true));
    accounts::remove_keys(&username, &keys)
}

fn fsinfo(q: &Qga, _: &Args) -> Reply {
    // What guest info tells, so the guest policy sees the same request.
    tri!(q.allowed(Call::GuestInfo));
    filesystems()
}
