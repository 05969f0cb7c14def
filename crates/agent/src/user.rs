//! Running a command as another user: resolve a name or uid once, before
//! the fork, so that the child only makes system calls.

use std::ffi::CString;

use nix::unistd::{getgrouplist, Gid, Uid, User};

/// Everything the child needs to become `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TargetUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups, as `initgroups` would set them.
    pub groups: Vec<u32>,
    /// Home directory, for `HOME`.
    pub home: String,
    /// Login shell, for `SHELL`.
    pub shell: String,
}

/// Why a user could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UserError {
    /// No such user in the guest's user database.
    #[error("no user {0:?} in the guest")]
    NotFound(String),
    /// The agent is not root and cannot switch users.
    #[error("the agent runs as uid {agent_uid} and cannot run commands as {user:?}; run the agent as root to use --user")]
    NotPermitted {
        /// The user asked for.
        user: String,
        /// The agent's own uid.
        agent_uid: u32,
    },
    /// The user database could not be read.
    #[error("cannot look up user {user:?}")]
    Lookup {
        /// The user asked for.
        user: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// Resolves `spec` (a login name or a numeric uid) for a child process.
pub(crate) fn resolve(spec: &str) -> Result<TargetUser, UserError> {
    let lookup = |source| UserError::Lookup {
        user: spec.into(),
        source,
    };
    let found = match spec.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).map_err(lookup)?,
        Err(_) => User::from_name(spec).map_err(lookup)?,
    };
    let user = found.ok_or_else(|| UserError::NotFound(spec.into()))?;
    let me = Uid::effective();
    if !me.is_root() && me != user.uid {
        return Err(UserError::NotPermitted {
            user: spec.into(),
            agent_uid: me.as_raw(),
        });
    }
    let groups = CString::new(user.name.clone())
        .ok()
        .and_then(|name| getgrouplist(&name, user.gid).ok())
        .unwrap_or_else(|| vec![user.gid]);
    Ok(TargetUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups: groups.into_iter().map(Gid::as_raw).collect(),
        home: user.dir.to_string_lossy().into_owned(),
        shell: user.shell.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_own_user_resolves_by_name_and_uid() {
        let me = User::from_uid(Uid::effective()).unwrap().unwrap();
        let by_name = resolve(&me.name).unwrap();
        let by_uid = resolve(&me.uid.to_string()).unwrap();
        assert_eq!(by_name, by_uid);
        assert_eq!(by_name.uid, me.uid.as_raw());
        assert!(by_name.groups.contains(&by_name.gid));
    }

    #[test]
    fn unknown_user_is_named_in_the_error() {
        let err = resolve("no-such-user-guestcomm").unwrap_err();
        assert!(matches!(err, UserError::NotFound(_)));
        assert!(err.to_string().contains("no-such-user-guestcomm"));
    }
}
