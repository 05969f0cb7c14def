//! One way for every command to reach a guest, whatever its TARGET names:
//! the [`Guest`] trait, implemented by [`direct::Direct`] (straight to an
//! agent's address, with `--identity`) and [`daemon::Daemon`] (a VM name,
//! through guestcommd's API, which checks the VM's policy and holds its
//! key). [`connect`] is the one place that tells them apart; the trait and
//! its types are in `operations`, which both implementations import.
//!
//! Errors are one line each (`anyhow`); the command picks the exit code.

mod daemon;
mod direct;
mod operations;

pub(crate) use operations::{FsOp, Guest};

use crate::api;
use crate::context::Context;
use crate::target::Target;

/// The guest `target` names; `--identity` is refused for VM names.
pub(crate) fn connect(target: &Target, ctx: &Context) -> anyhow::Result<Box<dyn Guest>> {
    match target {
        Target::Direct(addr) => Ok(Box::new(direct::Direct::new(
            addr.clone(),
            ctx.identity().map(Into::into),
        ))),
        Target::Vm(name) => {
            if ctx.identity().is_some() {
                anyhow::bail!("--identity is for agent addresses; for VM {name:?} guestcommd holds the key (see `guestcomm vm credentials`)");
            }
            let client = ctx.api().map_err(|e| api::one_line(&e))?.clone();
            let vm_path = api::vm_path(name).map_err(|e| api::one_line(&e))?;
            Ok(Box::new(daemon::Daemon::new(client, name.clone(), vm_path)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Output;

    fn context(identity: Option<&str>) -> Context {
        Context::new(None, None, identity.map(Into::into), Output::Text)
    }

    fn refusal(target: &str, ctx: &Context) -> String {
        match connect(&target.parse().unwrap(), ctx) {
            Ok(_) => panic!("{target}: accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn identity_is_for_agent_addresses_only() {
        let err = refusal("web1", &context(Some("/k")));
        assert!(
            err.starts_with("--identity is for agent addresses"),
            "{err}"
        );
        assert!(connect(&"unix:///a.sock".parse().unwrap(), &context(Some("/k"))).is_ok());
        assert!(connect(&"web1".parse().unwrap(), &context(None)).is_ok());
    }

    #[test]
    fn vm_names_are_checked_before_asking_the_daemon() {
        let err = refusal("bad name", &context(None));
        assert!(err.starts_with("invalid VM name"), "{err}");
    }
}
