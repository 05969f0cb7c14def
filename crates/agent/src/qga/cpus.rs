//! guest-get-vcpus and guest-get-load: the guest's CPUs, from sysfs, and
//! their load averages, from /proc/loadavg.

use serde_json::{json, Value};

use super::reply::{generic, Reply};

/// guest-get-vcpus: each CPU of sysfs, online or not, and whether it can
/// go offline.
pub(super) fn vcpus() -> Reply {
    let mut cpus: Vec<(u64, Value)> = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/devices/system/cpu") else {
        return generic("cannot read /sys/devices/system/cpu");
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cpu"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let online_file = entry.path().join("online");
        let (online, can_offline) = match std::fs::read_to_string(&online_file) {
            Ok(text) => (text.trim() == "1", true),
            Err(_) => (true, false),
        };
        cpus.push((
            id,
            json!({ "logical-id": id, "online": online, "can-offline": can_offline }),
        ));
    }
    cpus.sort_by_key(|(id, _)| *id);
    Reply::Return(Value::Array(cpus.into_iter().map(|(_, v)| v).collect()))
}

/// guest-get-load: /proc/loadavg's three averages (`GuestLoadAverage`).
pub(super) fn load() -> Reply {
    let Ok(text) = std::fs::read_to_string("/proc/loadavg") else {
        return generic("cannot read /proc/loadavg");
    };
    let averages: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    match averages[..] {
        [load1, load5, load15] => {
            Reply::Return(json!({"load1": load1, "load5": load5, "load15": load15}))
        }
        _ => generic("cannot parse /proc/loadavg"),
    }
}
