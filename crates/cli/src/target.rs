//! What a TARGET on the command line names: an agent's transport address
//! (direct mode) or a VM known to the daemon.

use guestcomm_transport::{Address, AddressError};

/// A parsed TARGET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Talk to the agent at this address directly.
    Direct(Address),
    /// A VM name, resolved by guestcommd.
    Vm(String),
}

impl std::str::FromStr for Target {
    type Err = AddressError;

    /// Anything with `://` must be a valid address; anything else is a VM name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if Address::looks_like_address(s) {
            s.parse().map(Target::Direct)
        } else {
            Ok(Target::Vm(s.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_direct_and_names_are_vms() {
        assert!(matches!("unix:///tmp/a".parse(), Ok(Target::Direct(_))));
        assert_eq!("web1".parse::<Target>().unwrap(), Target::Vm("web1".into()));
        assert!("unix://rel".parse::<Target>().is_err());
    }
}
